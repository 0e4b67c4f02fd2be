"""Host a model folder on Vertex AI for Earth Engine, say what it costs, and take it down again.

    python -m model.serving.deploy MODEL_DIR --project P --region us-central1 [--staging gs://BUCKET/staging] \\
        [--machine-type n1-standard-4] [--min-replicas 1] [--max-replicas 1] [--serving-image IMAGE] [--yes]
    python -m model.serving.deploy --undeploy MODEL_DIR|ENDPOINT_ID --project P --region R [--delete-endpoint]
    python -m model.serving.deploy --list --project P --region R

Deploying uploads the folder's EE-ified SavedModel (`eeified/`, written by `model.train` or
`model.serving.eeify`) to the Vertex AI Model Registry with Google's prebuilt TensorFlow prediction container
(or, with `--serving-image`, the folder's `saved_model/` behind the project's own server image built
from `model/serving/Dockerfile.serve`), creates or reuses an endpoint by display name, deploys the model to
it with 100 % of the traffic (and undeploys the models it replaces), and writes into the model folder:

    deployment.json            model, endpoint, deployed-model ids, machine type, time, cost estimate
    earthengine_snippet.py     the `ee.Model.fromVertexAi(...)` call for this endpoint (Python) ...
    earthengine_snippet.js     ... and for the Code Editor, both built from earthengine.json

A local MODEL_DIR is copied to `--staging gs://...` first (Vertex AI reads models from Cloud Storage).
Before anything is spent, the cost estimate (the machine type's hourly rate x 24 x 30, from the dated
table below) is shown and confirmed (`--yes` skips the question in scripts). `--undeploy` undeploys
every model of the endpoint (billing stops) and, with `--delete-endpoint`, deletes it; `--list` shows
what is deployed in a region and its estimated monthly cost.

The Vertex AI calls go through the pinned `google-cloud-aiplatform` GAPIC clients over REST, with the
caller's application default credentials (`gcloud auth application-default login`) or `--key-file`.
Long-running operations are polled with progress. Permission, quota, unknown-region and missing-model
problems end in one `error:` line that says what to change.

By concern: `pricing` (the price table and the cost estimate), `storage` (Cloud Storage: reading,
writing, copying a local folder up), `vertex` (the Vertex AI calls and waiting for operations),
`snippets` (the Earth Engine code), `deployment` (deploy, undeploy, list: the steps in order) and
`command` (the command line and the confirmation).
"""

from model.serving.deploy.command import main

__all__ = ["main"]
