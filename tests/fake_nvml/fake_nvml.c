/*
 * A stand-in for libnvidia-ml.so.1, so that the real pynvml runs its real code paths on a
 * machine without an NVIDIA driver. tests/e2e/test_resources.py compiles it with gcc into
 * TMP/libnvidia-ml.so.1 and runs the sampler in a subprocess with LD_LIBRARY_PATH=TMP;
 * pynvml's CDLL("libnvidia-ml.so.1") then finds it.
 *
 * The mode comes from $FAKE_NVML_MODE, read at every call:
 *   driver_not_loaded  init returns NVML_ERROR_DRIVER_NOT_LOADED (9)
 *   no_gpu             init succeeds, the device count is 0
 *   gpu (default)      two GPUs with the fixed values below
 *   hang               like gpu, but reading utilisation never returns (a hung driver)
 *
 * The two GPUs: device 0 reads 37 % busy, 20 of 80 GiB used, 61 C, 123.456 W; device 1
 * reads 5 % busy, 0 of 16 GiB used and does not support temperature or power.
 * Processes: device 0 runs the calling process (512 MiB, compute; and a graphics context
 * whose memory is "not available") and its parent (256 MiB, compute); device 1 runs the
 * calling process (1024 MiB, compute).
 *
 * Built with -DFAKE_NVML_NO_V3 it lacks the _v3 process-list entry points, like a driver
 * older than pynvml's default calls.
 *
 * The counters fake_nvml_* are read by the tests through ctypes, to prove that NVML is
 * initialised once and the device handles are cached.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef int nvmlReturn_t;
enum {
    NVML_SUCCESS = 0,
    NVML_ERROR_UNINITIALIZED = 1,
    NVML_ERROR_INVALID_ARGUMENT = 2,
    NVML_ERROR_NOT_SUPPORTED = 3,
    NVML_ERROR_INSUFFICIENT_SIZE = 7,
    NVML_ERROR_DRIVER_NOT_LOADED = 9,
};
#define NVML_VALUE_NOT_AVAILABLE_ULL (~0ULL)
#define MIB (1024ULL * 1024ULL)
#define GIB (1024ULL * MIB)

/* The layouts pynvml's ctypes structures expect (c_nvmlMemory_t, c_nvmlUtilization_t,
 * c_nvmlProcessInfo_v2_t, which pynvml also uses for _v3). */
typedef struct { unsigned long long total, free, used; } nvmlMemory_t;
typedef struct { unsigned int gpu, memory; } nvmlUtilization_t;
typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId, computeInstanceId;
} nvmlProcessInfo_t;

typedef struct fake_device { unsigned int index; } *nvmlDevice_t;
static struct fake_device devices[2] = {{0}, {1}};

int fake_nvml_init_calls;
int fake_nvml_shutdown_calls;
int fake_nvml_handle_calls;
int fake_nvml_utilization_calls;
int fake_nvml_process_list_calls;
static int initialised;

static int mode_is(const char *mode) {
    const char *current = getenv("FAKE_NVML_MODE");
    return strcmp(current ? current : "gpu", mode) == 0;
}

static unsigned int device_count(void) { return mode_is("no_gpu") ? 0 : 2; }

static nvmlReturn_t check_device(nvmlDevice_t device) {
    if (!initialised) return NVML_ERROR_UNINITIALIZED;
    if (device != &devices[0] && device != &devices[1]) return NVML_ERROR_INVALID_ARGUMENT;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
    (void)flags;
    fake_nvml_init_calls++;
    if (mode_is("driver_not_loaded")) return NVML_ERROR_DRIVER_NOT_LOADED;
    initialised = 1;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlInit_v2(void) { return nvmlInitWithFlags(0); }
nvmlReturn_t nvmlInit(void) { return nvmlInitWithFlags(0); }

nvmlReturn_t nvmlShutdown(void) {
    if (!initialised) return NVML_ERROR_UNINITIALIZED;
    initialised = 0;
    fake_nvml_shutdown_calls++;
    return NVML_SUCCESS;
}

const char *nvmlErrorString(nvmlReturn_t result) {
    switch (result) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    default: return "Unknown Error";
    }
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
    if (!initialised) return NVML_ERROR_UNINITIALIZED;
    *count = device_count();
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetCount(unsigned int *count) { return nvmlDeviceGetCount_v2(count); }

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    if (!initialised) return NVML_ERROR_UNINITIALIZED;
    if (index >= device_count()) return NVML_ERROR_INVALID_ARGUMENT;
    fake_nvml_handle_calls++;
    *device = &devices[index];
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length) {
    nvmlReturn_t ret = check_device(device);
    if (ret != NVML_SUCCESS) return ret;
    snprintf(name, length, "Fake GPU %u", device->index);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t device, nvmlUtilization_t *util) {
    nvmlReturn_t ret = check_device(device);
    if (ret != NVML_SUCCESS) return ret;
    fake_nvml_utilization_calls++;
    while (mode_is("hang")) sleep(1000);  /* ctypes released the GIL: only this thread waits */
    util->gpu = device->index == 0 ? 37 : 5;
    util->memory = device->index == 0 ? 21 : 1;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory) {
    nvmlReturn_t ret = check_device(device);
    if (ret != NVML_SUCCESS) return ret;
    memory->total = device->index == 0 ? 80 * GIB : 16 * GIB;
    memory->used = device->index == 0 ? 20 * GIB : 0;
    memory->free = memory->total - memory->used;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t device, int sensor, unsigned int *temp) {
    nvmlReturn_t ret = check_device(device);
    if (ret != NVML_SUCCESS) return ret;
    if (sensor != 0) return NVML_ERROR_INVALID_ARGUMENT; /* NVML_TEMPERATURE_GPU */
    if (device->index == 1) return NVML_ERROR_NOT_SUPPORTED;
    *temp = 61;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t device, unsigned int *milliwatts) {
    nvmlReturn_t ret = check_device(device);
    if (ret != NVML_SUCCESS) return ret;
    if (device->index == 1) return NVML_ERROR_NOT_SUPPORTED;
    *milliwatts = 123456;
    return NVML_SUCCESS;
}

/* NVML's two-call protocol: too small a buffer (or none) gets the count and
 * NVML_ERROR_INSUFFICIENT_SIZE; an empty list is NVML_SUCCESS with a count of 0. */
static nvmlReturn_t list_processes(const nvmlProcessInfo_t *list, unsigned int n,
                                   unsigned int *count, nvmlProcessInfo_t *infos) {
    fake_nvml_process_list_calls++;
    if (n == 0) {
        *count = 0;
        return NVML_SUCCESS;
    }
    if (infos == NULL || *count < n) {
        *count = n;
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    memcpy(infos, list, n * sizeof *list);
    *count = n;
    return NVML_SUCCESS;
}

static nvmlReturn_t compute_processes(nvmlDevice_t device, unsigned int *count,
                                      nvmlProcessInfo_t *infos) {
    nvmlReturn_t ret = check_device(device);
    if (ret != NVML_SUCCESS) return ret;
    if (device->index == 0) {
        nvmlProcessInfo_t list[2] = {{(unsigned int)getpid(), 512 * MIB, 0, 0},
                                     {(unsigned int)getppid(), 256 * MIB, 0, 0}};
        return list_processes(list, 2, count, infos);
    }
    nvmlProcessInfo_t list[1] = {{(unsigned int)getpid(), 1024 * MIB, 0, 0}};
    return list_processes(list, 1, count, infos);
}

static nvmlReturn_t graphics_processes(nvmlDevice_t device, unsigned int *count,
                                       nvmlProcessInfo_t *infos) {
    nvmlReturn_t ret = check_device(device);
    if (ret != NVML_SUCCESS) return ret;
    if (device->index == 0) {
        nvmlProcessInfo_t list[1] = {
            {(unsigned int)getpid(), NVML_VALUE_NOT_AVAILABLE_ULL, 0, 0}};
        return list_processes(list, 1, count, infos);
    }
    return list_processes(NULL, 0, count, infos);
}

nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v2(nvmlDevice_t device, unsigned int *count,
                                                     nvmlProcessInfo_t *infos) {
    return compute_processes(device, count, infos);
}

nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses_v2(nvmlDevice_t device, unsigned int *count,
                                                      nvmlProcessInfo_t *infos) {
    return graphics_processes(device, count, infos);
}

#ifndef FAKE_NVML_NO_V3
nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t device, unsigned int *count,
                                                     nvmlProcessInfo_t *infos) {
    return compute_processes(device, count, infos);
}

nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses_v3(nvmlDevice_t device, unsigned int *count,
                                                      nvmlProcessInfo_t *infos) {
    return graphics_processes(device, count, infos);
}
#endif
