"""gunicorn settings for Ezra: `gunicorn -c gunicorn.conf.py wsgi:app`.

Command-line flags override these (e.g. `--bind 0.0.0.0:8000` in a container).
No `preload_app`: each worker starts its own job runners after the fork.
"""
import os
import shutil
import tempfile

bind = "unix:/run/ezra/ezra.sock"
workers = 3
threads = 4  # gthread: a slow upload does not hold a whole worker
worker_class = "gthread"
timeout = 120
graceful_timeout = 30  # running jobs hand back at their next checkpoint (pipeline drain)
max_requests = 2000
max_requests_jitter = 200
accesslog = "-"
# The request id (X-Request-ID) in the access log, as the app logs it.
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms pid=%(p)s rid=%({x-request-id}o)s'

# /metrics adds up every worker's samples: they live in files in this folder (prometheus-client
# multiprocess mode). Set here, before the workers are forked, so all of them share it.
_metrics_dir_is_ours = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _metrics_dir_is_ours:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="ezra-metrics-")


def on_starting(server):
    # Samples of an earlier run would be added to this one's: start from an empty folder.
    folder = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(folder, exist_ok=True)
    for name in os.listdir(folder):
        if name.endswith(".db"):
            os.remove(os.path.join(folder, name))


def post_worker_init(worker):
    # Runner slots start with the worker, not at its first request.
    from jobs import start_runner
    start_runner(worker.wsgi)


def child_exit(server, worker):
    # A dead worker's live gauges (busy runner slots) stop counting.
    from prometheus_client import multiprocess
    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if _metrics_dir_is_ours:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
