"""The demo scene every job runs on by default: generated once, deterministically, offline."""
