# deepseek.c - one Makefile.
#   make            build ./deepseek
#   make test       build and run the default test suite (no torch needed)
#   make asan       build ./deepseek-asan and build-asan/tests/run_tests with
#                   clang ASan+UBSan (objects in build-asan/, ./deepseek untouched)
#   make test-asan  build those and run the test suite under them
#   make fuzz       build libFuzzer targets (clang) into build/fuzz/
#   make bench      print benchmark commands (see README)
#   make clean

CC      ?= cc
CFLAGS  ?= -O2 -g
override CFLAGS += -std=c11 -Wall -Wextra -Wshadow -Wstrict-prototypes -Wno-unused-parameter \
           -fopenmp -D_GNU_SOURCE -Isrc
LDLIBS  += -fopenmp -ljansson -lpcre2-8 -lopenblas -lm -lpthread
AVX2FLAGS = -mavx2 -mfma -mf16c

BUILD   ?= build
BIN     ?= deepseek
SRC_LIB := $(wildcard src/core/*.c src/tensor/*.c src/io/*.c src/model/*.c src/tokenizer/*.c src/runtime/*.c)
SRC_CLI := $(wildcard src/cli/*.c)
OBJ_LIB := $(SRC_LIB:%.c=$(BUILD)/%.o)
OBJ_CLI := $(SRC_CLI:%.c=$(BUILD)/%.o)
SRC_TEST := $(wildcard tests/test_*.c) tests/run_tests.c
OBJ_TEST := $(SRC_TEST:%.c=$(BUILD)/%.o)

.PHONY: all test asan test-asan fuzz clean help bench
all: $(BIN)

$(BIN): $(OBJ_LIB) $(OBJ_CLI)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

# ISA-specific kernels get their own flags; ops.c dispatches at run time.
$(BUILD)/src/tensor/%_avx2.o: src/tensor/%_avx2.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(AVX2FLAGS) -MMD -MP -c $< -o $@

$(BUILD)/tests/run_tests: $(OBJ_LIB) $(OBJ_TEST)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

test: deepseek $(BUILD)/tests/run_tests
	./$(BUILD)/tests/run_tests
	@for s in tests/cli_*.sh; do [ -f "$$s" ] || continue; echo "== $$s"; sh "$$s" ./deepseek || exit 1; done

ASAN_CFLAGS = -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
asan:
	$(MAKE) BUILD=build-asan BIN=deepseek-asan CC=clang CFLAGS="$(ASAN_CFLAGS)" deepseek-asan build-asan/tests/run_tests

test-asan: asan
	ASAN_OPTIONS=detect_leaks=1 ./build-asan/tests/run_tests

FUZZ_CFLAGS = -O1 -g -fsanitize=fuzzer,address,undefined -fno-omit-frame-pointer -std=c11 -D_GNU_SOURCE -Isrc -fopenmp
fuzz:
	@mkdir -p $(BUILD)/fuzz
	for f in tests/fuzz/fuzz_*.c; do \
	  n=$$(basename $$f .c); \
	  clang $(FUZZ_CFLAGS) -o $(BUILD)/fuzz/$$n $$f $(filter-out src/cli/%,$(SRC_LIB)) $(LDLIBS) || exit 1; \
	done

clean:
	rm -rf build build-asan deepseek deepseek-asan

help:
	@sed -n '1,9p' Makefile

-include $(OBJ_LIB:.o=.d) $(OBJ_CLI:.o=.d) $(OBJ_TEST:.o=.d)
