"""Process plumbing shared by every command and Beam worker: help layout, did-you-mean and quiet start (`command`),
the job's outcome file (`outcome`), progress counters (`progress`) and the filter that keeps
TensorFlow's start-up notice off stderr (`quiet_tensorflow`)."""
