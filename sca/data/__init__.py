"""Data: dataset registration, region mappers, prompts, batching and loaders."""
