"""Serving cost of a trained model: `serve` measures the variants, `report` tabulates them, `cli` runs
them on finished runs. Light on purpose: the report imports this package without torch."""

DEPLOY_FILE = "deploy.json"
