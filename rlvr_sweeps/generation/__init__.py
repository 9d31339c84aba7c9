"""How completions are sampled: the sampling settings and benchmarks (sampling), the generators (transformers or
the training vLLM engine) and the standalone vLLM backend."""
