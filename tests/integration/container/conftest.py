"""Fixtures of the container tier: Vigil's image, built once per session by
``scripts/build-image.sh`` (what ``make image`` runs), and a Redis image for the chart's
``podman play kube`` test, both on the local Debian base (no registry can be pulled here).

``make test`` installs podman, buildah, runc, mmdebstrap, netavark and aardvark-dns like the
other Debian packages the tests run (``scripts/system-packages.sh``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from podman_env import BASE_IMAGE, BuiltImage, build_image, image_config, podman

#: The tag the tests build (``make image`` builds ``localhost/vigil:dev``; both are the same
#: layers, so one build serves the other from podman's cache).
IMAGE = "localhost/vigil:test"
REDIS_IMAGE = "localhost/vigil-test-redis:bookworm"
#: ``VIGIL_TEST_IMAGE=localhost/vigil:dev make test``: use that image instead of building one
#: (to iterate on these tests; CI leaves it unset and builds).
PREBUILT_ENV = "VIGIL_TEST_IMAGE"
REDIS_CONTAINERFILE = Path(__file__).with_name("redis.Containerfile")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.container)


@pytest.fixture(scope="session")
def vigil_image(tmp_path_factory: pytest.TempPathFactory) -> BuiltImage:
    missing = [p for p in ("podman", "mmdebstrap", "runc", "catatonit") if not shutil.which(p)]
    if missing:
        raise RuntimeError(f"the container tests need {', '.join(missing)}: `make test` "
                           "installs them (scripts/system-packages.sh), or apt-get install them")
    prebuilt = os.environ.get(PREBUILT_ENV)
    if prebuilt:  # iterating on these tests: an image built before, named explicitly
        config = image_config(prebuilt)
        return BuiltImage(prebuilt, 0.0, int(config["Size"]), config)
    log = tmp_path_factory.mktemp("image") / "build.log"
    seconds = build_image(IMAGE, log)
    config = image_config(IMAGE)
    return BuiltImage(IMAGE, seconds, int(config["Size"]), config)


@pytest.fixture(scope="session")
def redis_image(vigil_image: BuiltImage) -> Iterator[str]:
    """Debian's redis-server on the same base (the chart's default is the Docker Hub image)."""
    podman("build", "--file", str(REDIS_CONTAINERFILE), "--build-arg",
           f"BASE_IMAGE={BASE_IMAGE}", "--tag", REDIS_IMAGE, str(REDIS_CONTAINERFILE.parent),
           timeout_s=600)
    yield REDIS_IMAGE
