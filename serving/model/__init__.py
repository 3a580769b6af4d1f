"""Model loading (local Hugging Face directories only) and the tiny random-weight model maker."""
