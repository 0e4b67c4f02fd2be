"""The trained model where people use it: an HTTP server for Vertex AI and Earth Engine (`serve`), any
image model made Earth-Engine-ready (`eeify`), and hosting on Vertex AI (`deploy`)."""
