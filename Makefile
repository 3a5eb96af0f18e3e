# Entry points. Everything builds into ./build with Ninja; scripts/bootstrap installs what is
# missing (apt-get, idempotent) before the first build.
BUILD ?= build
JOBS ?= 2
CMAKE_FLAGS ?=
RUN_ARGS ?=

.PHONY: all bootstrap configure build run test bench fmt clean

all: build

bootstrap:
	@./scripts/bootstrap

$(BUILD)/build.ninja:
	@./scripts/bootstrap
	cmake -S . -B $(BUILD) -G Ninja $(CMAKE_FLAGS)

configure: $(BUILD)/build.ninja

build: configure
	cmake --build $(BUILD) -j $(JOBS)

# Starts the daemon on safe local defaults (proxy and plugin bus on loopback, metrics on :9090).
run: build
	./$(BUILD)/bin/0xgend --data-dir ./oxg-data $(RUN_ARGS)

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 600

bench: build
	./scripts/bench $(BUILD)

fmt:
	find src tests bench sdk plugins -name '*.h' -o -name '*.cc' 2>/dev/null | xargs -r clang-format -i

clean:
	rm -rf $(BUILD)
