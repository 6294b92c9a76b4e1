// allreduce_probe: how fast MPI_Allreduce sums float buffers between the ranks of this job,
// the collective that data-parallel training runs once per step on its gradients
// (docs/distributed.md). Plain MPI C API; it does not use the softlab library.
//
//   mpirun -np 2 allreduce_probe [--reps R] [--warmup W] [--min-kib K] [--max-mib M]
//                                [--factor F] [--lat-reps L]
//
// For each message size from K KiB to M MiB (multiplied by F each time: 2 or 4) it runs W
// untimed and R timed MPI_Allreduce(MPI_IN_PLACE, MPI_FLOAT, MPI_SUM) calls, each after an
// MPI_Barrier. A repetition's time is the slowest rank's; the table gives the median and the
// minimum over the R repetitions, the algorithm bandwidth bytes / time and the bus bandwidth
// 2(N-1)/N x bytes / time (what each rank sends over its link in a ring allreduce, per
// second; comparable with a link's speed whatever N is). Then the median latency of a
// 1-element allreduce over L repetitions. Rank 0 prints a Markdown table.
#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

struct Options {
  int reps = 20;
  int warmup = 3;
  long min_kib = 4;
  long max_mib = 64;
  int factor = 4;
  int lat_reps = 2000;
};

void usage(int rank) {
  if (rank == 0)
    std::fprintf(stderr,
                 "usage: mpirun -np N allreduce_probe [--reps R (20)] [--warmup W (3)]\n"
                 "         [--min-kib K (4)] [--max-mib M (64)] [--factor 2|4 (4)]\n"
                 "         [--lat-reps L (2000)]\n");
}

bool parse(int argc, char** argv, Options& o, int rank) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      usage(rank);
      return false;
    }
    if (i + 1 >= argc) {
      if (rank == 0) std::fprintf(stderr, "allreduce_probe: %s needs a value\n", a.c_str());
      usage(rank);
      return false;
    }
    char* end = nullptr;
    const long v = std::strtol(argv[++i], &end, 10);
    if (*end != '\0' || v <= 0) {
      if (rank == 0) std::fprintf(stderr, "allreduce_probe: %s wants a positive integer\n", a.c_str());
      return false;
    }
    if (a == "--reps") o.reps = static_cast<int>(v);
    else if (a == "--warmup") o.warmup = static_cast<int>(v);
    else if (a == "--min-kib") o.min_kib = v;
    else if (a == "--max-mib") o.max_mib = v;
    else if (a == "--factor") o.factor = static_cast<int>(v);
    else if (a == "--lat-reps") o.lat_reps = static_cast<int>(v);
    else {
      if (rank == 0) std::fprintf(stderr, "allreduce_probe: unknown option %s\n", a.c_str());
      usage(rank);
      return false;
    }
  }
  if (o.factor != 2 && o.factor != 4) {
    if (rank == 0) std::fprintf(stderr, "allreduce_probe: --factor must be 2 or 4\n");
    return false;
  }
  if (o.min_kib * 1024 > o.max_mib * 1024 * 1024) {
    if (rank == 0) std::fprintf(stderr, "allreduce_probe: --min-kib is above --max-mib\n");
    return false;
  }
  return true;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Times `reps` in-place allreduces of `count` floats; returns each repetition's slowest rank's
// time on rank 0 (empty elsewhere).
std::vector<double> time_allreduce(std::vector<float>& buf, int count, int warmup, int reps, int rank) {
  for (int i = 0; i < warmup; ++i)
    MPI_Allreduce(MPI_IN_PLACE, buf.data(), count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
  std::vector<double> t(static_cast<size_t>(reps));
  for (int i = 0; i < reps; ++i) {
    MPI_Barrier(MPI_COMM_WORLD);
    const double t0 = MPI_Wtime();
    MPI_Allreduce(MPI_IN_PLACE, buf.data(), count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    t[static_cast<size_t>(i)] = MPI_Wtime() - t0;
  }
  std::vector<double> slowest(rank == 0 ? t.size() : 0);
  MPI_Reduce(t.data(), rank == 0 ? slowest.data() : nullptr, reps, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
  return slowest;
}

std::string size_label(long bytes) {
  char s[32];
  if (bytes >= 1024L * 1024) std::snprintf(s, sizeof s, "%ld MiB", bytes / (1024L * 1024));
  else std::snprintf(s, sizeof s, "%ld KiB", bytes / 1024);
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  Options o;
  if (!parse(argc, argv, o, rank)) {
    MPI_Finalize();
    return 2;
  }

  // Where the ranks run: one host name per rank, gathered to rank 0.
  char name[MPI_MAX_PROCESSOR_NAME] = {};
  int len = 0;
  MPI_Get_processor_name(name, &len);
  std::vector<char> names(rank == 0 ? static_cast<size_t>(size) * MPI_MAX_PROCESSOR_NAME : 0);
  MPI_Gather(name, MPI_MAX_PROCESSOR_NAME, MPI_CHAR, names.data(), MPI_MAX_PROCESSOR_NAME, MPI_CHAR, 0,
             MPI_COMM_WORLD);

  const long max_bytes = o.max_mib * 1024 * 1024;
  std::vector<float> buf(static_cast<size_t>(max_bytes / 4));

  // Check once that the sum is right: rank r contributes r + 1 everywhere.
  {
    const int n = static_cast<int>(std::min<long>(max_bytes / 4, 1 << 20));
    std::fill(buf.begin(), buf.begin() + n, static_cast<float>(rank + 1));
    MPI_Allreduce(MPI_IN_PLACE, buf.data(), n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    const float want = 0.5f * static_cast<float>(size) * static_cast<float>(size + 1);
    int bad = 0;
    for (int i = 0; i < n; ++i) bad |= buf[static_cast<size_t>(i)] != want;
    int any_bad = 0;
    MPI_Allreduce(&bad, &any_bad, 1, MPI_INT, MPI_LOR, MPI_COMM_WORLD);
    if (any_bad) {
      if (rank == 0) std::fprintf(stderr, "allreduce_probe: MPI_Allreduce returned a wrong sum\n");
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
  }
  // Zeros stay zeros under repeated in-place sums: no overflow, no denormals.
  std::fill(buf.begin(), buf.end(), 0.0f);

  if (rank == 0) {
    char lib[MPI_MAX_LIBRARY_VERSION_STRING] = {};
    int liblen = 0;
    MPI_Get_library_version(lib, &liblen);
    std::string first_line(lib, strcspn(lib, ",\n"));
    std::string hosts;
    for (int r = 0; r < size; ++r) {
      const std::string h(&names[static_cast<size_t>(r) * MPI_MAX_PROCESSOR_NAME]);
      if (hosts.find(h) == std::string::npos) hosts += (hosts.empty() ? "" : ", ") + h;
    }
    std::printf("MPI_Allreduce(MPI_IN_PLACE, MPI_FLOAT, MPI_SUM): %d ranks on %s; %s\n", size, hosts.c_str(),
                first_line.c_str());
    std::printf("%d timed repetitions after %d untimed, each after a barrier; time = slowest rank's\n\n",
                o.reps, o.warmup);
    std::printf("| size | floats | median µs | min µs | algbw GB/s | busbw GB/s | busbw Gbit/s |\n");
    std::printf("|---:|---:|---:|---:|---:|---:|---:|\n");
  }

  const double ring = size > 1 ? 2.0 * (size - 1) / size : 0.0;
  for (long bytes = o.min_kib * 1024; bytes <= max_bytes; bytes *= o.factor) {
    const int count = static_cast<int>(bytes / 4);
    const std::vector<double> t = time_allreduce(buf, count, o.warmup, o.reps, rank);
    if (rank == 0) {
      const double med = median(t);
      const double mn = *std::min_element(t.begin(), t.end());
      const double alg = static_cast<double>(bytes) / med;
      std::printf("| %s | %d | %.1f | %.1f | %.3f | %.3f | %.2f |\n", size_label(bytes).c_str(), count,
                  1e6 * med, 1e6 * mn, alg / 1e9, ring * alg / 1e9, 8 * ring * alg / 1e9);
      std::fflush(stdout);
    }
  }

  const std::vector<double> lat = time_allreduce(buf, 1, 10 * o.warmup, o.lat_reps, rank);
  if (rank == 0) {
    std::printf("\nlatency of a 1-float allreduce: median %.2f µs, min %.2f µs over %d repetitions\n",
                1e6 * median(lat), 1e6 * *std::min_element(lat.begin(), lat.end()), o.lat_reps);
  }
  MPI_Finalize();
  return 0;
}
