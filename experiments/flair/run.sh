#!/usr/bin/env bash
# The FLAIR table (issue 15): solver=flair with the temporal prior (FLAIR) and the per-frame prior (ablation) on
# the 20 face_clips test clips, for each video task; the per-frame baselines come with them (*_input columns).
# Then `python experiments/flair/make_table.py outputs/flair_runs`. ~2 min per run on one CPU thread.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=outputs/flair_runs   # run dirs (ignored by git); their results.csv are copied to experiments/flair/results/
COMMON="logger=none trainer.enable_progress_bar=false save_tensors=true data=face_clips"
for task in ${TASKS:-video_sr4 video_deblur video_interp}; do
  for prior in flair_faces flair_frame; do
    .venv/bin/python run.py solver=flair task=$task prior=$prior $COMMON run_dir=$RUNS/${task}_$prior
  done
done
if [ "${NOFACE:-0}" = 1 ]; then   # the face weighting ablation on SR
  .venv/bin/python run.py solver=flair task=video_sr4 prior=flair_faces solver.face_weight=false $COMMON \
    run_dir=$RUNS/video_sr4_flair_faces_noface
fi
mkdir -p experiments/flair/results
for d in $RUNS/*/; do cp "$d/results.csv" "experiments/flair/results/$(basename "$d").csv"; done
.venv/bin/python experiments/flair/make_table.py $RUNS
