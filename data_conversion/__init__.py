"""The conversion app: raw FLARE25 tree -> Qwen3-VL training JSON (converter, records, report), the validator,
the demo tree, and their command lines. The FLARE knowledge it uses lives in qwenvl/flare/."""
