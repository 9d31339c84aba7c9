"""What a run is asked: the verifiable math problems and their prompts (data), and how an answer is checked
(verifier, math-verify)."""
