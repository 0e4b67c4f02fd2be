"""Process plumbing shared by every command and Beam worker: help layout and quiet start (`command`),
the job's outcome file (`outcome`), progress counters (`progress`) and the filter that keeps
TensorFlow's start-up notice off stderr (`quiet_tensorflow`)."""
