"""latentreason: does RL teach a model *how* to reason, or *when*?

Cache activations of a base / post-RL model pair, discover reasoning strategies,
extract steering vectors, steer the base model at selected tokens, and measure how
much of the RL gain that recovers, against honest controls.
"""

__version__ = "0.1.0"


def __getattr__(name: str):  # lazy top-level API: importing latentreason stays light
    if name == "extract_vectors":
        from latentreason.extract import extract_vectors

        return extract_vectors
    raise AttributeError(f"module 'latentreason' has no attribute {name!r}")
