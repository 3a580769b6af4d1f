"""The rack's batch service: OpenAI's Files and Batches API over the gateway, at low priority.

`protocol` holds the API's object shapes and its one error shape, `jsonl` checks an input file, `store` keeps
files, jobs and per-line progress in SQLite, `upstream` talks to the gateway (or one node), `pace` adapts how many
requests are in flight, `runner` works the jobs, `app` is the HTTP surface, `tenants` maps an API key to a tenant.
"""
