"""gunicorn settings for Ezra: `gunicorn -c gunicorn.conf.py wsgi:app` (gunicorn also reads
this file from the working directory by itself).

Command-line flags override these (e.g. `--bind 0.0.0.0:8000` in a container).
No `preload_app`: each worker starts its own job runners after the fork.

gunicorn answers an oversized or garbled request line or header with an HTML page, which the
frontend cannot read. nginx in front refuses those first, with JSON (README, "Deployment"):
its request-line and header buffers are 8 KB, so gunicorn's limits sit at or above them.
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
limit_request_line = 8190  # gunicorn's maximum; nginx refuses longer lines (414) first
limit_request_field_size = 8190  # one header line, like nginx's 8 KB buffer
limit_request_fields = 32768  # nginx already caps all headers at 4 x 8 KB
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


def post_request(worker, req, environ, resp):
    # The worker decided to restart after this request (max_requests) or was told to stop:
    # its runner claims nothing more from now on. 'Worker exiting' and worker_exit come only
    # after the worker's other requests finish, and a slot freed meanwhile would claim a job
    # that it then hands straight back.
    if not worker.alive:
        from jobs import _drain
        _drain()


def worker_exit(server, worker):
    # A recycled or stopped worker: its running jobs stop at their next checkpoint and hand
    # back. Set here, before the interpreter's exit joins the job pool's threads (an atexit
    # hook would run only after that, when the jobs had run to their end).
    from jobs import _drain
    _drain()


def child_exit(server, worker):
    # A dead worker's live gauges (busy runner slots) stop counting.
    from prometheus_client import multiprocess
    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if _metrics_dir_is_ours:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
