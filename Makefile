# The few commands people use; each script installs what it needs on first use.
.PHONY: train test lint format
train:            ## train the embedded default (CONFIG_FILE / NGPU from the environment)
	./run_llama_train.sh
test:             ## the test suite, as CI runs it
	./run_tests.sh
lint:
	ruff check . && ruff format --check .
format:
	ruff format . && ruff check --fix .
