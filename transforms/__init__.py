"""Beam DoFns and composite PTransforms, and the pure logic they are made of."""

from transforms.quiet_tensorflow import hide_notice_if_a_quiet_start_asked

# A Beam local worker process that a quiet start launched: keep TensorFlow's oneDNN notice out of its
# stderr too, before its DoFns load TensorFlow (transforms/quiet_tensorflow.py says why and how).
hide_notice_if_a_quiet_start_asked()
