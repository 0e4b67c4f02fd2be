"""terrabeam: satellite imagery to land-cover maps with Apache Beam and TensorFlow.

This file is what `--setup_file ./setup.py` ships to Dataflow workers, so it declares every runtime
dependency once. requirements.txt pins the exact versions CI tested.
"""

from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    # 2.77: the Beam version the container image and CI use; RunInference and
    # with_exception_handling as used here need >= 2.50.
    "apache-beam[gcp]>=2.77,<3",
    # Keras 3 (the .keras format and its layers API) and tf.data AUTOTUNE behaviour we rely on.
    "tensorflow-cpu>=2.16",
    # ee.data.computePixels with NUMPY_NDARRAY and the high-volume endpoint.
    "earthengine-api>=1.0",
    # WarpedVRT, MemoryFile and the COG driver (GDAL >= 3.1) in the bundled wheels.
    "rasterio>=1.3",
    # numpy 2 dtypes and the stable C ABI that rasterio/tensorflow wheels build against.
    "numpy>=1.26",
    # google.auth.default() and service-account credentials for Earth Engine.
    "google-auth>=2.0",
    # The retry decorator with backoff and jitter.
    "retry>=0.9.2",
    # ISA-L deflate: gzip-compatible TFRecord compression ~35x faster than zlib's default level
    # (benchmarks/results/extract_throughput.json); 1.0 has the zlib-compatible compressobj API.
    "isal>=1.0",
    # CRC-32C for TFRecord framing in C (already a Beam[gcp] dependency; used directly).
    "google-crc32c>=1.5",
    # python -m model.serving.deploy: the Vertex AI Model Registry and endpoints through the aiplatform_v1 GAPIC
    # clients over REST (already a Beam[gcp] dependency; used directly).
    "google-cloud-aiplatform>=1.40",
    # model.serving.deploy copies model folders to Cloud Storage and writes deployment.json there (already a
    # Beam[gcp] dependency; used directly).
    "google-cloud-storage>=2.10",
    # --inputs catalog.json: STAC catalogues and item collections of imagery by date (transforms/io/dated.py);
    # 1.8 has Catalog.get_items(recursive=True).
    "pystac>=1.8",
    # Pixel areas on the ellipsoid and the assessment's coordinate transforms (transforms/assessment,
    # and so change's hectares); 3.3 has CRS.geodetic_crs and Geod.polygon_area_perimeter as used.
    "pyproj>=3.3",
    # The quick-look PNGs of class, transition and evaluation maps (transforms/cog.py, model/evaluate.py);
    # 10.1 has ImageFont.load_default(size=...) as used.
    "pillow>=10.1",
]

VIEW_STATIC = [
    "static/*.html",
    "static/*.js",
    "static/*.css",
    "static/vendor/README.md",
    "static/vendor/leaflet/*.js",
    "static/vendor/leaflet/*.css",
    "static/vendor/leaflet/LICENSE",
    "static/vendor/leaflet/images/*.png",
]

setup(
    name="terrabeam",
    version="0.1.0",
    description="Satellite imagery to land-cover maps with deep learning, at any scale.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(
        include=["pipelines", "pipelines.*", "transforms", "transforms.*", "model", "model.*"]
    ),
    # The map viewer's page, script, style and vendored Leaflet (pipelines/view/static).
    package_data={"pipelines.view": VIEW_STATIC},
    install_requires=INSTALL_REQUIRES,
    # `terrabeam extract|train|predict|...` (pipelines/cli.py); the `python -m` forms work as well.
    entry_points={"console_scripts": ["terrabeam = pipelines.cli:main"]},
    extras_require={
        # python -m model.serving.serve (the Vertex AI / Cloud Run container installs these itself).
        "serve": [
            "starlette>=0.37",  # the ASGI app: routes, request streaming, lifespan
            "uvicorn>=0.30",  # the HTTP server Vertex AI's custom-container contract expects on AIP_HTTP_PORT
            # uvicorn's C HTTP parser and event loop, which it takes when installed: reading a 4.5 MB
            # request took 9.0 ms with its pure-Python parser (h11), 3.4 ms with these.
            "httptools>=0.6",
            "uvloop>=0.19; sys_platform != 'win32'",
            "pybase64>=1.3",  # SIMD Base64: payloads of several MB per request (benchmarks/serve_latency.py)
            "orjson>=3.9",  # orjson.Fragment to embed encoded outputs without re-serializing them
        ],
        # python -m pipelines.view: the local web map of a prediction.
        "view": [
            # Dynamic map tiles cut from COGs/VRTs (overviews, internal tiles) in Web Mercator; 7.0 has
            # ImageData.array (masked). TiTiler would add FastAPI for endpoints this app has in 70 lines.
            "rio-tiler>=7",
            "starlette>=0.37",  # the web app (the same stack as model.serving.serve)
            "uvicorn>=0.30",  # its HTTP server
        ],
        "test": [
            "pytest>=8",
            "pytest-timeout>=2.3",
            "pytest-xdist>=3.5",  # make test runs the suite on every core (-n auto)
            "ruff>=0.5",
            "httpx>=0.27",  # HTTP client of the serving tests and benchmark
            "rio-cogeo>=5",  # validates the prediction COGs (GDAL's own COG rules)
            "playwright>=1.40",  # drives Debian's Chromium in the viewer's browser tests
            "nbclient>=0.10",  # runs notebooks/walkthrough.ipynb top to bottom
            "nbformat>=5.9",  # reads and checks the notebook
            "ipykernel>=6.25",  # the kernel the notebook runs in
            # The fresh environment of the staged-package test (tests/helpers/staged.py): 2-3 s from its
            # hard-linked wheel cache where pip takes minutes to unpack the same wheels.
            "uv>=0.5",
        ],
        # benchmarks/model_quality.py: the per-pixel RandomForest baseline of the talk.
        "bench": ["scikit-learn>=1.3"],
        # make docs: docs/ as a site (mkdocs.yml).
        "docs": [
            "mkdocs>=1.6",  # validation.anchors: --strict fails on a link to a missing heading
            "mkdocs-material>=9",  # the theme; content.code.copy and navigation.footer are 9.0's opt-in features
            # tests/docs/test_docs.py reads the pages' code blocks and markers; 4.0 follows CommonMark 0.31.2.
            "markdown-it-py>=4",
        ],
    },
)
