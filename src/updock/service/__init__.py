"""`updock serve`: runs on a schedule, and an HTTP API to start runs and see what they did.

    serve.py       the service: token, schedule loop, runner and API together; SIGTERM stops it
    runner.py      one run at a time (the CLI's lock too), each published like a CLI run
    schedule.py    when runs are due: a cron expression plus random jitter (croniter)
    api.py         the HTTP API (stdlib ThreadingHTTPServer, bounded against slow clients)
    openapi.json   the API's OpenAPI description (served at /v1/openapi.json)

Above `run.py` and `publish.py`, below `cli.py`.
"""
