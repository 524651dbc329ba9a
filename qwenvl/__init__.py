"""Qwen3-VL finetuning library for FLARE25: data pipeline, training entry point, evaluation."""
