"""onegen.evaluation: the paper's evaluation protocols, each as its reference implementation computes it.

`onegen eval depth|camera|nvs` (pipelines/cli/eval_command.py) pairs a folder of predictions with a
published ground-truth layout, scores every pair, and writes one JSON result (results.py). Bad input (a
missing or extra prediction, a wrong size, no valid pixels, NaNs) is a recorded reason per item, never a
number in an average. Imports only core, manifests, model and training (docs/architecture.md).
"""
