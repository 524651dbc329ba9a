"""Raw FLARE25 tree -> Qwen3-VL training JSON: dataset table, demo tree, converter and validator."""
