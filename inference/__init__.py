"""KServe model server of the fraud model: online features from Redis, LightGBM, V1 and V2.

Modules: :mod:`inference.schema` (request validation), :mod:`inference.scoring` (features,
model, near-real-time appends, degradation), :mod:`inference.batching` (adaptive batching),
:mod:`inference.log` (parquet inference log), :mod:`inference.model` (the ``kserve.Model``),
:mod:`inference.app` (server assembly), :mod:`inference.server` (process entry point) and
:mod:`inference.client` (start a server, send requests).
"""
