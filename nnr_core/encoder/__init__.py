"""The encoder's orchestration below the API: its input (prepare), one NDU per tensor (ndu), blocks of
tensors in one NDU (blocks), and its syntax trace (trace)."""
