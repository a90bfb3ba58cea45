"""The ServerApp of the deployment: configuration from the run config (pyproject.toml, `flwr run -c`)."""
from fashion_app.task import config, make_server_app

app = make_server_app(lambda context: config(context.run_config), {})
