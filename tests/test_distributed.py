"""zaya_jax/distributed.py: where a job's coordinator, process count and process id come from (pure resolution;
the real multi-process runs are in tests/test_multihost.py)."""

import pytest

from zaya_jax import distributed
from zaya_jax.distributed import Job

JAX_ENV = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "2"}
SLURM = {"SLURM_JOB_ID": "77", "SLURM_NTASKS": "8", "SLURM_PROCID": "3", "SLURM_LOCALID": "1",
         "SLURM_STEP_NODELIST": "node[1-2]"}


def test_nothing_set_is_a_single_process():
  assert distributed.resolve(environ={}) is None
  assert distributed.resolve(environ={"HOME": "/root", "KUBERNETES_SERVICE_HOST": "10.1.0.1"}) is None


def test_arguments():
  assert distributed.resolve("127.0.0.1:5000", 2, 1, environ={}) == Job("127.0.0.1:5000", 2, 1, "arguments")


def test_environment_variables():
  assert distributed.resolve(environ=JAX_ENV) == Job("10.0.0.1:1234", 4, 2, "JAX_* environment variables")


def test_arguments_take_precedence_over_the_environment():
  job = distributed.resolve(num_processes=8, process_id=5, environ=JAX_ENV)
  assert job == Job("10.0.0.1:1234", 8, 5, "arguments and JAX_* environment variables")


@pytest.mark.parametrize("args, env", [((None, 1, None), {}), ((), {"JAX_NUM_PROCESSES": "1"}),
                                       (("127.0.0.1:5000", 1, 0), {}), ((None, 1, None), SLURM)])
def test_one_process_initializes_nothing(args, env):
  assert distributed.resolve(*args, environ=env) is None


@pytest.mark.parametrize("args, env, message", [
    ((), {"JAX_NUM_PROCESSES": "two"}, r"JAX_NUM_PROCESSES='two' is not an integer"),
    ((None, 2, 2), {"JAX_COORDINATOR_ADDRESS": "h:1"}, r"process_id 2 is not in \[0, num_processes=2\)"),
    ((None, 0, None), {}, r"num_processes must be >= 1, got 0"),
    (("h:1", 2, None), {}, r"\['process_id'\] not set"),
    ((), {"JAX_PROCESS_ID": "1"}, r"\['coordinator_address', 'num_processes'\] not set"),
])
def test_incomplete_or_inconsistent_settings_are_named(args, env, message):
  with pytest.raises(ValueError, match=message):
    distributed.resolve(*args, environ=env)


@pytest.mark.parametrize("env, source", [
    (SLURM, "SLURM"),
    ({"OMPI_MCA_orte_hnp_uri": "1234.0;tcp://10.0.0.1:4000", "OMPI_COMM_WORLD_SIZE": "2"}, "Open MPI"),
    ({"TPU_WORKER_HOSTNAMES": "t0,t1,t2,t3"}, "TPU pod"),
    ({"MEGASCALE_COORDINATOR_ADDRESS": "t0:8080", "TPU_WORKER_HOSTNAMES": "t0"}, "TPU multislice"),
    ({"KUBERNETES_SERVICE_HOST": "10.1.0.1", "JOB_COMPLETION_INDEX": "0"}, "Kubernetes indexed Job"),
])
def test_launchers_are_left_to_jax_auto_detection(env, source):
  assert distributed.resolve(environ=env) == Job(None, None, None, source)


@pytest.mark.parametrize("env", [dict(SLURM, SLURM_NTASKS="1"), {"TPU_WORKER_HOSTNAMES": "t0"},
                                 {"OMPI_MCA_orte_hnp_uri": "1234.0;tcp://10.0.0.1:4000", "OMPI_COMM_WORLD_SIZE": "1"}])
def test_a_launcher_with_one_task_is_a_single_process(env):
  assert distributed.resolve(environ=env) is None


def test_a_launcher_fills_what_is_not_given():
  """Under SLURM, a coordinator port given explicitly leaves the count and id to the launcher (JAX reads them)."""
  assert distributed.resolve("node1:4000", environ=SLURM) == Job("node1:4000", None, None, "arguments")


def test_initialize_without_a_job_touches_nothing(monkeypatch):
  for name in (*JAX_ENV, *SLURM, "OMPI_MCA_orte_hnp_uri", "TPU_WORKER_HOSTNAMES", "TPU_PROCESS_ADDRESSES",
               "MEGASCALE_COORDINATOR_ADDRESS", "JOB_COMPLETION_INDEX"):
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setattr(distributed.jax.distributed, "initialize", lambda *a, **k: pytest.fail("initialized"))
  assert distributed.initialize() is False
