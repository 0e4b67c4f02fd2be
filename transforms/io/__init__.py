"""I/O adapters: where pixels and records come from and go to.

- `rasters`: local and Cloud Storage GeoTIFFs/COGs read window by window (`LocalRasterSource`).
- `dated`: imagery by date (`before=a.tif after=b.tif`, or a STAC file): a source per date, or one stack.
- `integrity`: whole-file checks and the broken-vs-flaky triage of read errors.
- `tfrecords`: TFRecord shards written and read fast (`WriteRecords`, `read_records`).
- `earthengine`: the Earth Engine client, its image recipes and asset registration.
- `retry`: the backoff policy for transient failures (`RetryConfig`).
- `files`: paths and JSON files of local and gs:// folders alike (`join`, `read_json`, `write_json`).
"""
