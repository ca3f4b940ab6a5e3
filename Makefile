# Two commands do everything on a fresh machine with Python 3.11 and make:
#   make run    set up, then run the nightly DAG once end to end on built-in synthetic data
#   make test   set up, then run the whole test suite
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3.11
UV_VERSION := 0.13.8
VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin

# Embedded defaults: everything lives under .adaptrec/ (SQLite for Airflow and MLflow, local artifacts).
export ADAPTREC_HOME ?= $(CURDIR)/.adaptrec
export AIRFLOW_HOME ?= $(ADAPTREC_HOME)/airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2
# glibc malloc keeps freed memory instead of handing it back to the kernel: by default each large tensor of a
# training or serving step is mmapped and unmapped again, and the kernel zero-fills its pages anew each time
# (docs/experiments/2026-12-03-allocator.md). glibc reads these at process start, so they are set for
# every process make starts (Airflow tasks, the recsys CLI, tests, benchmarks); docker/Dockerfile sets the same
# for the worker image. A `recsys` started outside both gets them from the shell (README, "Performance").
export MALLOC_MMAP_THRESHOLD_ ?= 4294967296
export MALLOC_TRIM_THRESHOLD_ ?= 4294967296
export MALLOC_TOP_PAD_ ?= 536870912
# airflow standalone starts its components as `airflow ...` subprocesses.
export PATH := $(BIN):$(PATH)

DAG_ID := recsys_nightly_retrain
CONF ?= {}
RUN_LOG = $(ADAPTREC_HOME)/logs/make-run.log
TRACKING_URI = sqlite:///$(ADAPTREC_HOME)/mlflow.db

.PHONY: help install airflow-init run test lint recommend report mlflow-ui airflow-ui lock clean bench-quality bench-pretraining bench-seeds bench-serving bench-epoch bench-continual bench-deployment bench-multi-worker bench-serving-http bench-open-bandit bench-feedback-loop

help:
	@echo "make run       set up and run $(DAG_ID) once (CONF='{\"model_size\": \"tiny\"}' to change Params)"
	@echo "make test      set up and run the test suite"
	@echo "make report    print the newest run's summary again"
	@echo "make recommend HISTORY=1,2,3 [VARIANT=int8]   ask the champion for recommendations (int8: no TensorFlow)"
	@echo "make mlflow-ui / make airflow-ui   open the UIs on the embedded stores"
	@echo "make bench-quality DATASET=amazon-beauty|ml-100k   model quality against baselines (../shared/data)"
	@echo "make bench-pretraining DATASET=amazon-beauty STEPS=0,900,1800,3600   validation NDCG of full fine-tuning per pre-training budget"
	@echo "make bench-seeds DATASET=ml-100k SEEDS=0,1,2   pre-training against scratch, PEFT against full, seed by seed"
	@echo "make bench-serving   top-10 latency of the served model against a NumPy floor, int8 vs float32"
	@echo "make bench-epoch   fine-tuning epoch and CPU time with and without the malloc settings above"
	@echo "make bench-continual BENCH_ARGS='--dataset diginetica --share 0.25'   adapting (finetune, replay, distillation) against retraining, ADER's protocol"
	@echo "make bench-serving-http  recsys serve under wrk load (1, 16, 64 at once) against in-process recommend()"
	@echo "make bench-deployment    a tiny run embedded vs on Celery + PostgreSQL + MLflow server, and a ten-run soak there"
	@echo "make bench-multi-worker  fine-tuning examples/s with 1 and 2 MultiWorkerMirroredStrategy workers"
	@echo "make bench-open-bandit   off-policy estimators on the Open Bandit Dataset sample: BTS from the random log"
	@echo "make bench-feedback-loop simulated users answer recsys serve; the pipeline learns from their clicks and the site's log, loop by loop"
	@echo "make lock      re-resolve requirements.lock after changing pyproject.toml"

$(BIN)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip install --quiet --python $(BIN)/python -r requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	@# Bytecode now, not at each task start: where PYTHONDONTWRITEBYTECODE is set, every process would
	@# otherwise compile Great Expectations, MLflow and Airflow from source again (seconds per task).
	$(BIN)/python -m compileall -q -j0 $(VENV)/lib/python3.11/site-packages > /dev/null
	touch $@

install: $(BIN)/.installed

airflow-init: install
	mkdir -p $(ADAPTREC_HOME)/logs
	$(BIN)/airflow db migrate > $(ADAPTREC_HOME)/logs/airflow-init.log 2>&1
	$(BIN)/airflow pools set gpu 1 "Training tasks (GPU workers)" >> $(ADAPTREC_HOME)/logs/airflow-init.log 2>&1
	$(BIN)/airflow dags reserialize >> $(ADAPTREC_HOME)/logs/airflow-init.log 2>&1

# The task logs are long; the terminal shows stage ends, epochs and the gate, the file keeps all.
run: airflow-init
	@echo "Running $(DAG_ID) with Params $(CONF); full log: $(RUN_LOG)"
	$(BIN)/airflow dags test $(DAG_ID) -c '$(CONF)' 2>&1 | tee $(RUN_LOG) \
		| grep --line-buffered -E "DAG TEST\] end task|training plan:|adapting:|Skipping task|epoch [0-9]+/|average of epochs|gate |stopping|AirflowFailException|DagRun Finished" \
		| sed -u -E 's/^[0-9T:.-]+Z //; s/ +\[[A-Za-z_.]+\] loc=.*//' || true
	@grep -q "DagRun Finished.*state=success" $(RUN_LOG) || { echo "The run failed: see $(RUN_LOG)"; exit 1; }
	@$(BIN)/recsys report

report: install
	@$(BIN)/recsys report

HISTORY ?= 1,2,3
VARIANT ?= float32
recommend: install
	@$(BIN)/recsys recommend --history $(HISTORY) --k 10 --variant $(VARIANT)

# Lint first: a style slip fails CI in seconds, not after the suite.
test: lint
	$(BIN)/python -m pytest

DATASET ?= amazon-beauty
ABLATIONS ?=
BENCH_ARGS ?=
bench-quality: install
	$(BIN)/python -m benchmarks.quality --dataset $(DATASET) $(if $(ABLATIONS),--ablations) $(BENCH_ARGS)

STEPS ?= 0,900,1800,3600
bench-pretraining: install
	$(BIN)/python -m benchmarks.pretraining_budget --dataset $(DATASET) --steps $(STEPS) $(BENCH_ARGS)

SEEDS ?= 0,1,2
bench-seeds: install
	$(BIN)/python -m benchmarks.pretraining_seeds --dataset $(DATASET) --seeds $(SEEDS) $(BENCH_ARGS)

bench-serving: install
	$(BIN)/python -m benchmarks.serving $(BENCH_ARGS)

bench-epoch: install
	$(BIN)/python -m benchmarks.epoch_time $(BENCH_ARGS)

bench-continual: install
	$(BIN)/python -m benchmarks.continual $(BENCH_ARGS)

bench-serving-http: install
	$(BIN)/python -m benchmarks.serving_http $(BENCH_ARGS)

bench-deployment: install
	$(BIN)/python -m benchmarks.deployment

bench-multi-worker: install
	$(BIN)/python -m benchmarks.multi_worker $(BENCH_ARGS)

bench-open-bandit: install
	$(BIN)/python -m benchmarks.open_bandit $(BENCH_ARGS)

bench-feedback-loop: install
	$(BIN)/python -m benchmarks.feedback_loop $(BENCH_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

mlflow-ui: install
	$(BIN)/mlflow ui --backend-store-uri $(TRACKING_URI) --host 127.0.0.1 --port 5000

airflow-ui: airflow-init
	$(BIN)/airflow standalone

lock:
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 \
		--python-platform x86_64-manylinux_2_28 -o requirements.lock

clean:
	rm -rf $(ADAPTREC_HOME)
