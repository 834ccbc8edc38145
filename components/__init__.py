"""KFP components of the training pipeline: plain typed functions plus thin adapters.

Every step is a plain function in its own module (``validate``, ``featurize``, ``train``,
``evaluate``, ``register``) that knows nothing about Kubeflow and is unit-tested directly.
:mod:`components.kfp_components` wraps each one in a ``@dsl.component`` whose body only maps
KFP inputs and artifacts to arguments and calls the function. Large data moves between steps
as files (KFP artifacts, and the Feast offline store under the settings' home); small results
move as JSON strings whose shapes are the dataclasses of :mod:`components.results`.
"""
