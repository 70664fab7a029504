"""Evaluation of drag-editing models: DragBench (Mean Distance by DIFT matching, Image Fidelity
by LPIPS) and held-out video pairs (tracked Mean Distance, PSNR and LPIPS against the real
target frame, inside and outside the mask). `python -m jobs.evaluate` runs them.

| module | what |
| --- | --- |
| `lpips.py` | LPIPS v0.1 (AlexNet) in plain torch, loaded from local weight files |
| `dift.py` | DIFT features from an SD-2.1-style model directory |
| `matching.py` | feature upsampling and point matching by cosine similarity |
| `editors.py` | the methods under test: the drag-edit pipeline, the identity baseline |
| `results.py` | result rows, metric columns, gallery rows |
| `bench_dragbench.py`, `bench_pairs.py` | the two benchmarks: per-sample rows, gallery rows |
| `report.py` | results.parquet/csv, summary.md/json, gallery.png |
| `tiny.py` | tiny random stand-ins for the DIFT model, AlexNet and the LPIPS heads |

Nothing here imports `pipeline/`: the pairs benchmark takes its point tracker as an argument.
"""
