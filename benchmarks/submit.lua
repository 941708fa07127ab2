-- wrk: POST /api/async/process with the smallest task (benchmarks/bench.py, the submit path).
wrk.method = "POST"
wrk.body = '{"data": "bench", "iterations": 1}'
wrk.headers["Content-Type"] = "application/json"
