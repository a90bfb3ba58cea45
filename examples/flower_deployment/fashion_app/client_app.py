"""The ClientApp of the deployment: configuration from the run config, partition from the node config."""
from fashion_app.task import config, make_client_app

app = make_client_app(lambda context: config(context.run_config))
