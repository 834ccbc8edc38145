"""KFP pipelines; each module's compiled YAML is committed next to it (``make compile``)."""
