"""LlamaGen (Sun et al. 2024): VQ image tokenizer + class-conditional Llama GPT, official checkpoint layout."""
