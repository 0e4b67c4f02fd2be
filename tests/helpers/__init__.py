"""Helpers shared by test modules (tiny scenes, models, fakes of Google's REST APIs); no test module imports another."""
