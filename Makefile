# crdsops front end: every target forwards to `inv TARGET`; `make help` lists the tasks.
# Flags come from make variables: make install obs=hst kind=dev, make mirror obs=hst src=test,
# make restore from=2026-11-28 yes=1, make upgrade to=v2.1, make backup dry_run=1; anything else: args="--flag ...".
.DEFAULT_GOAL := help

STACK ?= .venv
INV := $(STACK)/bin/inv
truthy = $(filter 1 y yes true,$(1))
FLAGS = $(if $(obs),--obs=$(obs)) $(if $(kind),--kind=$(kind)) $(if $(src),--src=$(src)) \
        $(if $(src_url),--src-url=$(src_url)) $(if $(src_host),--src-host=$(src_host)) \
        $(if $(from),--from=$(from)) $(if $(to),--to=$(to)) $(if $(call truthy,$(yes)),--yes) \
        $(if $(call truthy,$(dry_run)),--dry-run) $(args)

TASKS := install rerun stop status metrics history runtests backup restore verify backups offsite mirror check-cache schedule rotate-logs nightly upgrade rollback releases lock config
.PHONY: help build run test $(TASKS)

help:
	@if [ -x $(INV) ]; then $(INV) --list; else echo "no stack yet: run 'make build' (or 'make run')"; fi
	@echo "make targets: build run test $(TASKS)"

$(TASKS): $(INV)
	$(INV) $@ $(FLAGS)

# `make run` on a fresh clone: build the stack, install hst django unless a server is installed, start it.
run: $(INV)
	$(INV) install --if-none --obs=$(or $(obs),hst) --kind=$(or $(kind),django)
	$(INV) run

build:
	bin/bootstrap

# bin/bootstrap reads system-packages.txt: the default server's packages for build/run, every
# purpose for test (which also starts MariaDB and sets up sshd, and builds the dev and vm categories).
test:
	bin/bootstrap --test
	$(STACK)/bin/python -m pytest $(args)

$(INV):
	bin/bootstrap
