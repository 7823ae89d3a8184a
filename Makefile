# kmseg - see README.md.
#   make            build ./kmseg (release, -O2 -march=native)
#   make test       build and run the test suite (tests/runner, "N passed, N failed")
#   make DEBUG=1 test   the same under AddressSanitizer + UndefinedBehaviorSanitizer
#   make fuzz       build the libFuzzer targets (clang) into build/fuzz/
#   make bench      run the side-by-side benchmarks against PyTorch (bench/)
#   PORTABLE=1      drop -march=native (binary for other machines)
#   MPI=0           build without Open MPI (one process only; default: MPI=1,
#                   `pkg-config ompi-c`, from libopenmpi-dev)

CC ?= gcc
ifeq ($(CC),cc)
CC = gcc
endif

WARN   = -Wall -Wextra -Wno-unused-parameter -Wshadow -Wstrict-prototypes
# -std=c11 (ISO mode) keeps -ffp-contract=off: no silent FMA contraction, so
# results do not depend on the optimiser. No -ffast-math.
CSTD   = -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE
ifdef DEBUG
OPT    = -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
BUILD  = build/debug
else
OPT    = -O2 -g
ifndef PORTABLE
OPT   += -march=native
endif
BUILD  = build/release
endif

# Open MPI (data-parallel train/pretrain, src/core/dist.h): on by default.
MPI ?= 1
ifeq ($(MPI),1)
MPI_CFLAGS := $(shell pkg-config --cflags ompi-c 2>/dev/null)
MPI_LIBS   := $(shell pkg-config --libs ompi-c 2>/dev/null)
ifeq ($(MPI_LIBS),)
$(error Open MPI not found (pkg-config ompi-c): run tools/install-deps.sh, or build with MPI=0)
endif
MPI_CFLAGS += -DKM_MPI
endif

CFLAGS  += $(CSTD) $(WARN) $(OPT) -fopenmp -MMD -MP $(MPI_CFLAGS)
LDLIBS  += -lpng -ljpeg -lm -ldl -lpthread $(MPI_LIBS)
LDFLAGS += -fopenmp $(if $(DEBUG),-fsanitize=address$(comma)undefined)
comma := ,

LIB_SRC  := $(sort $(wildcard src/core/*.c src/nn/*.c src/io/*.c src/models/*.c src/mine/*.c src/eval/*.c src/train/*.c src/cmd/*.c src/report/*.c))
MAIN_SRC := src/main.c
TEST_SRC := $(sort $(wildcard tests/*.c))

LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
MAIN_OBJ := $(MAIN_SRC:%.c=$(BUILD)/%.o)
TEST_OBJ := $(TEST_SRC:%.c=$(BUILD)/%.o)

.PHONY: all test fuzz bench clean deps
all: kmseg

kmseg: $(BUILD)/kmseg
	ln -sf $(BUILD)/kmseg kmseg

$(BUILD)/libkmseg.a: $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/kmseg: $(MAIN_OBJ) $(BUILD)/libkmseg.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# The test binary links every object file directly (not via the archive) so
# that self-registering tests and all commands are included.
$(BUILD)/tests/runner: $(TEST_OBJ) $(LIB_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

# The reduction check tests/test_mpi.c runs under mpirun (MPI builds only).
$(BUILD)/tests/mpi_reduce_check: tests/mpi/reduce_check.c $(BUILD)/libkmseg.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)
MPI_CHECK := $(if $(filter 1,$(MPI)),$(BUILD)/tests/mpi_reduce_check)

# Tests run from the repository root, call ./kmseg for CLI tests and read
# ../shared (override with KMSEG_SHARED=...). T=name filters tests.
test: $(BUILD)/tests/runner kmseg $(MPI_CHECK)
	KMSEG_BIN=$(BUILD)/kmseg $(BUILD)/tests/runner $(T)

FUZZ_TARGETS := $(patsubst fuzz/%.c,build/fuzz/%,$(wildcard fuzz/fuzz_*.c))
FUZZ_LIB_SRC := $(filter-out src/cmd/%,$(LIB_SRC))
# The library is compiled once (instrumented, with the fuzzing-build macro that
# e.g. skips zip CRC checks so mutations reach the parsers) and linked into
# every target.
FUZZ_CFLAGS  := $(CSTD) -O1 -g -fsanitize=fuzzer-no-link,address,undefined \
                -DFUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION -fopenmp=libgomp
FUZZ_OBJ     := $(FUZZ_LIB_SRC:%.c=build/fuzz/obj/%.o)
fuzz: $(FUZZ_TARGETS)
build/fuzz/obj/%.o: %.c
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -MMD -MP -c -o $@ $<
build/fuzz/%: fuzz/%.c $(FUZZ_OBJ)
	@mkdir -p build/fuzz
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< $(FUZZ_OBJ) $(LDLIBS) -lgomp

bench: kmseg
	bash bench/run_all.sh

deps:
	bash tools/install-deps.sh

clean:
	rm -rf build kmseg

-include $(LIB_OBJ:.o=.d) $(MAIN_OBJ:.o=.d) $(TEST_OBJ:.o=.d) $(FUZZ_OBJ:.o=.d)
