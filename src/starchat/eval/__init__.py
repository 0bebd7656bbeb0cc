"""Evaluation: HumanEval for chat models in a sandbox, pass@k, validation loss, and report comparison."""
