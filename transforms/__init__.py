"""Beam steps (DoFns and composite PTransforms) and the pieces they are made of.

The Beam steps live at this level: `extract` (points -> patches -> records), `inference` (tiles ->
model -> trimmed cores), `cog` (cores -> Cloud-Optimized GeoTIFFs), `resume` (what a killed prediction
already wrote). The pieces they use are grouped by concern:

- `transforms.io`: where data comes from and goes to (local/Cloud Storage rasters, their integrity
  checks, TFRecord shards, Earth Engine, the retry policy).
- `transforms.geometry`: pure geometry (pixel grids, tiling, point sampling, the train/validation split,
  test-time augmentation).
- `transforms.contracts`: the data contracts shared by writer and reader (record schema, manifest,
  label schemes and their presets).
- `transforms.assessment`: map accuracy and area by the good-practice protocol (stratified sample
  design, sample size and allocation, the stratified estimators, reports).
- `transforms.runtime`: process plumbing (command-line help and quiet start, job outcome, progress
  counters, the TensorFlow start-up filter).

Importing a package does no work: entry points and DoFn set-up call what they need.
"""
