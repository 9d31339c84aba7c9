"""Analysis of finished sweeps: the rank x initialization tables and curves of the study.

python -m analysis runs/study --out analysis_out
python -m analysis --wandb my-entity/rlvr-sweeps --group study --out analysis_out
"""
