"""The trained model where people use it: an HTTP server for Vertex AI and Earth Engine (`serve`, the
command; `server`, the app it runs; `contract`, its port, routes and limits), any image model made
Earth-Engine-ready (`eeify`), and hosting on Vertex AI (the `deploy` package)."""
