#!/usr/bin/env bash
# The GPU checks of the solver issue in one run, for a session that is lent a GPU:
#
#     bash benchmarks/gpu_check.sh          # OUT=folder to keep the logs (default gpu_check_out)
#
# Needs only torch with CUDA (and numpy, tqdm, tensorboard, torchvision): the `gpu` tests
# it runs import no cvxpy (tests/solvers/tasks.py), so it runs on a bare accelerator
# machine from the source tree, without installing the package. Every part is time-boxed,
# at most about 9 minutes in all: one 10-minute device call. In order of importance:
#   1. every test marked `gpu` (CUDA against CPU: solver, sync-free mode, the captured
#      CUDA graph against the eager CUDA loop, the lower-triangle Newton matrix, heads,
#      engine, data; after the target, the compiled solver and the compiled head, forward
#      + backward, against the plain ones)
#   2. the issue's GPU target: 8 tasks, 5-way 15-shot, ResNet-12 features (D = 16,000),
#      gap <= 1e-4, head forward + backward (target: <= 5 ms), with the CUDA graph (the
#      default) and without it (rows "eager/cuda"), active lambda1 and lambda1 = 0; then
#      apart, with the most time, the compiled solver at active lambda1 (row
#      "compiled/cuda": the compile is not timed, its first call's wall time is printed;
#      on the CPU, ReLU features at this D: 206 s, one compile per gather width). Each row is
#      printed as soon as it is measured
#   3. kernels per iteration (ReLU features, D = 640, 15-shot; counted on the CPU) and
#      the time of one on CUDA, with and without the graph, and the compiled solve's time
#      (bench_kernels.py --cuda)
#   4. the backbone grid at 5 and 15 shots on the GPU (iterations, ms, head / encoder)
#   5. one ResNet-12 meta-training step (8 x 5-way 15-shot) split into its parts, fp32
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu_check_out}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
    python3 -c "import sys, torch; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available())"
} 2>&1 | tee "$out/env.txt"
timeout 120 python3 -m pytest -q -p no:cacheprovider -m gpu -rs \
    tests/solvers/test_ipm_sync_free.py tests/solvers/test_graph_loop.py tests/solvers/test_ipm_systems.py \
    tests/engine/test_engine_step.py \
    tests/heads/test_heads_contract.py tests/data/test_data_sampler.py 2>&1 | tee "$out/gpu_tests.txt"
timeout 60 python3 benchmarks/bench_solver.py --device cuda --features backbone --shots 15 \
    --lambda1 active 0 --lambda2 1 --smoothing 0 --no-cvx --no-fista --repeats 5 2>&1 | tee "$out/target.txt"
timeout 240 python3 benchmarks/bench_solver.py --device cuda --features backbone --shots 15 \
    --lambda1 active --lambda2 1 --smoothing 0 --no-cvx --no-fista --repeats 5 --compiled 2>&1 \
    | tee -a "$out/target.txt"
# the compiled solver's GPU test apart: compiling for the GPU takes a while
timeout 60 python3 -m pytest -q -p no:cacheprovider -m gpu -rs tests/solvers/test_compiled_solver.py 2>&1 \
    | tee -a "$out/gpu_tests.txt"
timeout 40 python3 benchmarks/bench_kernels.py --quick --cuda --no-step-count 2>&1 | tee "$out/kernels.txt"
timeout 30 python3 benchmarks/bench_solver.py --device cuda --features backbone --shots 5 15 \
    --lambda1 0 active near --lambda2 0.1 1 10 --smoothing 0 1 --no-cvx --no-fista --repeats 3 \
    2>&1 | tee "$out/backbone_grid.txt"
timeout 30 python3 benchmarks/bench_train_step.py --device cuda 2>&1 | tee "$out/train_step.txt"
