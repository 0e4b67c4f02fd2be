"""Where the prediction server listens and how much it takes: the defaults of Vertex AI's custom-container
contract and the server's own limits.

Plain constants: the command line (`model.serving.serve`, whose --help needs none of the server's
packages) and `model.serving.deploy` (the port and routes of the project's server image) read them.
"""

# Vertex AI custom-container contract ("Custom container requirements for prediction"): Vertex AI
# sets these variables; the defaults apply elsewhere (Cloud Run sets PORT, a laptop sets nothing).
DEFAULT_PORT = 8080
DEFAULT_HEALTH_ROUTE = "/health"
DEFAULT_PREDICT_ROUTE = "/predict"

# Room for the JSON around the Base64 strings on top of Earth Engine's maxPayloadBytes.
ENVELOPE_BYTES = 64 * 1024
# Requests in progress (read, queued for the model or answered) beyond which uvicorn answers 503
# (retry later), bounding memory.
DEFAULT_MAX_CONCURRENT_REQUESTS = 32
# Threads running decode + model + encode; two keep the model busy while another request is decoded.
DEFAULT_THREADS = 2
