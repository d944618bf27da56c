"""gunicorn settings for a production API process, if you run the API outside supervisord's default:
`gunicorn -c deploy/gunicorn.conf.py 'controlplane.api.app:create_app()'`. `make run` and
deploy/whinmovilla.service use the same settings from controlplane/gunicorn_conf.py."""

from controlplane.api.gunicorn_conf import *  # noqa: F403 - one place for the settings
