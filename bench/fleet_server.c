/*
 * A lean Modbus TCP server standing in for a fleet of PAC3200 meters: the C
 * port of bench/fleet_server.py, which stays the reference and the fallback.
 *
 * Benchmark use only. The fleet simulator runs on the same cores as the
 * service under test; at ~15 us of CPU per request the Python server took a
 * visible share of them and so inflated the service's Delay. Real meters have
 * their own CPUs, so the simulator should cost as little as possible. Same
 * command line, stdout protocol and Modbus answers as the Python version:
 *
 *     cc -O2 -Wall -Wextra -std=c11 -o fleet_server bench/fleet_server.c -lm
 *     ./fleet_server --ports 50 --units-per-port 10
 *
 * Binds --ports listeners on 127.0.0.1 (ephemeral ports unless --base-port
 * is given) and prints one JSON line on stdout:
 * {"ports": [...], "units_per_port": U, "pid": ...}. SIGUSR1 prints a
 * statistics line; SIGTERM/SIGINT print it and exit. The server also exits
 * when its parent dies, so a killed harness leaves nothing running.
 *
 * One thread, one level-triggered epoll loop; signals arrive through a
 * signalfd, so nothing but the loop ever acts on them.
 */
#define _GNU_SOURCE

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HOST "127.0.0.1"
#define PROGRAM "fleet_server"
#define LOAD_CYCLE_S 900.0 /* slow load swing, so values change a little every second */
#define HOUSEKEEPING_MS 1000 /* parent check (and re-arming paused listeners) at least this often */

enum {
    /* The PAC3200 answers these register ranges (PDU offsets, end exclusive):
     * 41 float32 measurements at 1..81 and 10 float64 energy counters at 801..837. */
    FLOAT_FIRST = 1,
    FLOAT_END = 83,
    ENERGY_FIRST = 801,
    ENERGY_END = 841,
    FLOAT_VALUES = (FLOAT_END - FLOAT_FIRST) / 2,
    ENERGY_VALUES = (ENERGY_END - ENERGY_FIRST) / 4,
    MAX_READ_REGISTERS = 125, /* Modbus limit for one fc3/fc4 read */
    MAX_UNITS_PER_PORT = 247, /* unit ids 1..247 are addressable */
    MAX_FRAME_LENGTH = 254,   /* MBAP length field of the largest legal ADU */
    LISTEN_BACKLOG = 1024,    /* a start-up may connect to every port at once */

    MBAP_PREFIX = 6,  /* transaction, protocol, length: the bytes the length field does not count */
    REQUEST_HEAD = 8, /* MBAP header and function code: enough to judge a frame */
    MAX_ADU = MBAP_PREFIX + MAX_FRAME_LENGTH,
    RESPONSE_HEAD = 9, /* MBAP header, function, byte count (or exception code) */
    MAX_ANSWER = RESPONSE_HEAD + 2 * MAX_READ_REGISTERS,
    READ_CHUNK = 16384,
    /* Every frame is at least REQUEST_HEAD bytes and earns at most MAX_ANSWER. */
    ANSWERS_CAP = ((MAX_ADU + READ_CHUNK) / REQUEST_HEAD + 1) * MAX_ANSWER,
    /* A client that sends but does not read stops being read beyond this much
     * unsent output, so it cannot make the server buffer without bound. */
    MAX_PENDING = 1 << 20,
    MAX_EVENTS = 256,
};

/* Modbus exception codes answered. */
enum {
    ILLEGAL_FUNCTION = 0x01,
    ILLEGAL_ADDRESS = 0x02,
    ILLEGAL_VALUE = 0x03,
    GATEWAY_TARGET_FAILED = 0x0B,
};

/* How strongly each float32 value follows the load swing (index = (offset - 1) / 2):
 * voltages and frequency barely move, currents and powers follow the load. */
static const double SENSITIVITY[] = {
    0.02, 0.02, 0.02, 0.02, 0.02, 0.02, /* voltages L-N, L-L */
    1.0, 1.0, 1.0, 1.0, 1.0, 1.0,       /* currents, apparent power per phase */
    1.0, 1.0, 1.0, 1.0, 1.0, 1.0,       /* active, reactive power per phase */
    0.05, 0.05, 0.05,                   /* power factor per phase */
    0.1, 0.1, 0.1, 0.1, 0.1, 0.1,       /* THD */
    0.001,                              /* frequency */
    0.02, 0.02,                         /* average voltages */
    1.0, 1.0, 1.0, 1.0,                 /* average current, total S, P, Q */
    0.05,                               /* total power factor */
    0.0, 0.0, 0.0, 0.0, 0.0, 0.0,       /* unmapped words 71..82 */
};
_Static_assert(sizeof SENSITIVITY / sizeof SENSITIVITY[0] == FLOAT_VALUES, "one sensitivity per float32 value");

/* Where the totals sit among the float32 values: the energy counters integrate them. */
enum { VALUE_S_TOTAL = 31, VALUE_P_TOTAL = 32, VALUE_Q_TOTAL = 33 };

/* -- deterministic random numbers ----------------------------------------------------- */

/* splitmix64: tiny, good enough for plausible loads, same sequence for the same --seed. */
struct rng {
    uint64_t state;
};

static uint64_t rng_next(struct rng *rng)
{
    uint64_t z = (rng->state += 0x9E3779B97F4A7C15u);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
    return z ^ (z >> 31);
}

/* Uniform in [low, high) from the top 53 bits, like Python's random.uniform. */
static double rng_uniform(struct rng *rng, double low, double high)
{
    return low + (high - low) * ((double)(rng_next(rng) >> 11) * 0x1.0p-53);
}

/* -- one simulated meter ---------------------------------------------------------------- */

struct meter {
    double base[FLOAT_VALUES];     /* the values at the middle of the load swing */
    double phase;                  /* where in the swing this meter is, so meters differ */
    double energy[ENERGY_VALUES];  /* counters, kept in double as the meter sends them */
    double last_s;                 /* wall clock of the last refresh: energy grows from there */
    long long stamp_s;             /* the whole second of the last refresh */
    uint8_t floats[4 * FLOAT_VALUES];        /* registers [1, 83) as on the wire */
    uint8_t energy_image[8 * ENERGY_VALUES]; /* registers [801, 841) as on the wire */
};

static void put_be16(uint8_t *out, unsigned value)
{
    out[0] = (uint8_t)(value >> 8);
    out[1] = (uint8_t)value;
}

static unsigned be16(const uint8_t *in)
{
    return (unsigned)in[0] << 8 | in[1];
}

static void put_be_float32(uint8_t *out, double value)
{
    float single = (float)value;
    uint32_t bits;
    memcpy(&bits, &single, sizeof bits);
    for (int i = 0; i < 4; i++)
        out[i] = (uint8_t)(bits >> (24 - 8 * i));
}

static void put_be_float64(uint8_t *out, double value)
{
    uint64_t bits;
    memcpy(&bits, &value, sizeof bits);
    for (int i = 0; i < 8; i++)
        out[i] = (uint8_t)(bits >> (56 - 8 * i));
}

/* A three-phase load at 230/400 V: 41 float32 values in register order. */
static void plausible_values(struct rng *rng, double values[FLOAT_VALUES])
{
    double u_ln[3], current[3], pf[3], s[3], p[3], q[3];
    double s_tot = 0.0, p_tot = 0.0, q_tot = 0.0, u_ln_sum = 0.0, current_sum = 0.0;
    int n = 0;

    for (int i = 0; i < 3; i++)
        u_ln[i] = rng_uniform(rng, 226.0, 234.0);
    for (int i = 0; i < 3; i++)
        current[i] = rng_uniform(rng, 5.0, 80.0);
    for (int i = 0; i < 3; i++)
        pf[i] = rng_uniform(rng, 0.85, 0.98);
    for (int i = 0; i < 3; i++) {
        s[i] = u_ln[i] * current[i];
        p[i] = s[i] * pf[i];
        q[i] = sqrt(fmax(s[i] * s[i] - p[i] * p[i], 0.0));
        s_tot += s[i];
        p_tot += p[i];
        q_tot += q[i];
        u_ln_sum += u_ln[i];
        current_sum += current[i];
    }
    for (int i = 0; i < 3; i++)
        values[n++] = u_ln[i];
    for (int i = 0; i < 3; i++)
        values[n++] = u_ln[i] * sqrt(3.0);
    for (int i = 0; i < 3; i++)
        values[n++] = current[i];
    for (int i = 0; i < 3; i++)
        values[n++] = s[i];
    for (int i = 0; i < 3; i++)
        values[n++] = p[i];
    for (int i = 0; i < 3; i++)
        values[n++] = q[i];
    for (int i = 0; i < 3; i++)
        values[n++] = pf[i];
    for (int i = 0; i < 3; i++)
        values[n++] = rng_uniform(rng, 1.0, 3.0); /* THD voltage */
    for (int i = 0; i < 3; i++)
        values[n++] = rng_uniform(rng, 5.0, 20.0); /* THD current */
    values[n++] = 50.0;
    values[n++] = u_ln_sum / 3.0;
    values[n++] = u_ln_sum * sqrt(3.0) / 3.0;
    values[n++] = current_sum / 3.0;
    values[n++] = s_tot;
    values[n++] = p_tot;
    values[n++] = q_tot;
    values[n++] = p_tot / s_tot;
    while (n < FLOAT_VALUES)
        values[n++] = 0.0;
}

/* Rebuild both images for the current second; counters grow with P, Q and S. */
static void meter_refresh(struct meter *meter, double now_s)
{
    double swing = 0.15 * sin(2.0 * M_PI * now_s / LOAD_CYCLE_S + meter->phase);
    double values[FLOAT_VALUES];
    for (int i = 0; i < FLOAT_VALUES; i++) {
        values[i] = meter->base[i] * (1.0 + swing * SENSITIVITY[i]);
        put_be_float32(meter->floats + 4 * i, values[i]);
    }
    double hours = fmax(now_s - meter->last_s, 0.0) / 3600.0;
    meter->energy[0] += values[VALUE_P_TOTAL] * hours; /* 801: active energy imported, tariff 1 */
    meter->energy[4] += values[VALUE_Q_TOTAL] * hours; /* 817: reactive energy imported, tariff 1 */
    meter->energy[8] += values[VALUE_S_TOTAL] * hours; /* 833: apparent energy, tariff 1 */
    for (int i = 0; i < ENERGY_VALUES; i++)
        put_be_float64(meter->energy_image + 8 * i, meter->energy[i]);
    meter->last_s = now_s;
    meter->stamp_s = (long long)now_s;
}

static void meter_init(struct meter *meter, struct rng *rng, double now_s)
{
    plausible_values(rng, meter->base);
    meter->phase = rng_uniform(rng, 0.0, 2.0 * M_PI);
    /* Imported tariff-1 counters (801, 817, 833) carry the load; the others barely move. */
    for (int i = 0; i < ENERGY_VALUES; i++) {
        bool loaded = i == 0 || i == 4 || i == 8;
        meter->energy[i] = loaded ? rng_uniform(rng, 1e5, 1e9) : rng_uniform(rng, 0.0, 1e4);
    }
    meter->last_s = now_s;
    meter_refresh(meter, now_s);
}

/* -- counters for the harness: did the client storm, reconnect, misbehave? ------------- */

struct stats {
    long long accepted, open, requests, exceptions, max_accepts_per_s;
    long long accept_second, accepts_this_second;
};

static double clock_s(clockid_t clock)
{
    struct timespec now;
    clock_gettime(clock, &now);
    return (double)now.tv_sec + (double)now.tv_nsec / 1e9;
}

static void stats_on_accept(struct stats *stats)
{
    stats->accepted++;
    stats->open++;
    long long second = (long long)clock_s(CLOCK_MONOTONIC);
    if (second != stats->accept_second) {
        stats->accept_second = second;
        stats->accepts_this_second = 0;
    }
    stats->accepts_this_second++;
    if (stats->accepts_this_second > stats->max_accepts_per_s)
        stats->max_accepts_per_s = stats->accepts_this_second;
}

static void stats_print(const struct stats *stats)
{
    printf("{\"accepted\": %lld, \"open\": %lld, \"requests\": %lld, \"exceptions\": %lld,"
           " \"max_accepts_per_s\": %lld}\n",
           stats->accepted, stats->open, stats->requests, stats->exceptions, stats->max_accepts_per_s);
    fflush(stdout);
}

/* The counters; the accept peak restarts, so each report covers one phase. */
static void stats_report(struct stats *stats)
{
    stats_print(stats);
    stats->max_accepts_per_s = stats->accepts_this_second = 0;
}

/* -- the server's state ------------------------------------------------------------------ */

/* Every epoll registration points at one of these, first member of its owner. */
enum source_kind { SOURCE_SIGNALS, SOURCE_LISTENER, SOURCE_CONNECTION };

struct source {
    enum source_kind kind;
    int fd;
};

/* One port: a gateway with units 1..U behind it. */
struct listener {
    struct source source;
    int port;
    bool paused; /* out of file descriptors: accepting again at the next housekeeping */
    struct meter *meters; /* unit u is meters[u - 1] */
};

/* One client connection to one port: pipelined requests, answers in order. */
struct connection {
    struct source source;
    struct listener *listener;
    uint32_t events;  /* what epoll watches now */
    bool closing;     /* no more reading: flush what is pending, then close */
    size_t partial_len;
    uint8_t partial[MAX_ADU]; /* the start of a frame whose rest has not arrived yet */
    uint8_t *pending;         /* answers the socket did not take yet, [pending_off, pending_len) */
    size_t pending_off, pending_len, pending_cap;
};

struct server {
    int epoll_fd;
    struct source signals;
    struct listener *listeners;
    int listener_count;
    int units_per_port;
    struct stats stats;
    pid_t parent;
    bool stopping;
    bool listeners_paused;
    /* Scratch for one read and its answers; a frame cut by the read's end is
     * copied in front of the next read, so frames never straddle two buffers. */
    uint8_t input[MAX_ADU + READ_CHUNK];
    uint8_t answers[ANSWERS_CAP];
};

static bool epoll_set(struct server *server, int op, struct source *source, uint32_t events)
{
    struct epoll_event event = {.events = events, .data.ptr = source};
    if (epoll_ctl(server->epoll_fd, op, source->fd, &event) == 0)
        return true;
    fprintf(stderr, PROGRAM ": epoll_ctl: %s\n", strerror(errno));
    return false;
}

/* -- Modbus answers ---------------------------------------------------------------------- */

static size_t put_response_head(uint8_t *out, unsigned tid, unsigned length, unsigned unit, unsigned function,
                                unsigned last)
{
    put_be16(out, tid);
    put_be16(out + 2, 0);
    put_be16(out + 4, length);
    out[6] = (uint8_t)unit;
    out[7] = (uint8_t)function;
    out[8] = (uint8_t)last;
    return RESPONSE_HEAD;
}

static size_t put_exception(struct stats *stats, uint8_t *out, unsigned tid, unsigned unit, unsigned function,
                            unsigned code)
{
    stats->exceptions++;
    return put_response_head(out, tid, 3, unit, (function | 0x80) & 0xFF, code);
}

/* The answer to one complete frame of `length` (MBAP length field) at `frame`, into `out`. */
static size_t answer(struct server *server, struct listener *listener, const uint8_t *frame, unsigned length,
                     double now_s, uint8_t *out)
{
    unsigned tid = be16(frame), unit = frame[6], function = frame[7];
    struct stats *stats = &server->stats;

    if (function != 3 && function != 4)
        return put_exception(stats, out, tid, unit, function, ILLEGAL_FUNCTION);
    if (length != 6) /* unit, function, address, count: nothing more, nothing less */
        return put_exception(stats, out, tid, unit, function, ILLEGAL_VALUE);
    if (unit < 1 || unit > (unsigned)server->units_per_port)
        return put_exception(stats, out, tid, unit, function, GATEWAY_TARGET_FAILED);
    struct meter *meter = &listener->meters[unit - 1];
    unsigned address = be16(frame + 8), count = be16(frame + 10);
    if (count < 1 || count > MAX_READ_REGISTERS)
        return put_exception(stats, out, tid, unit, function, ILLEGAL_VALUE);
    if (meter->stamp_s != (long long)now_s)
        meter_refresh(meter, now_s);

    const uint8_t *image;
    unsigned start;
    if (address >= FLOAT_FIRST && address + count <= FLOAT_END) {
        image = meter->floats;
        start = 2 * (address - FLOAT_FIRST);
    } else if (address >= ENERGY_FIRST && address + count <= ENERGY_END) {
        image = meter->energy_image;
        start = 2 * (address - ENERGY_FIRST);
    } else {
        return put_exception(stats, out, tid, unit, function, ILLEGAL_ADDRESS);
    }
    unsigned size = 2 * count;
    put_response_head(out, tid, 3 + size, unit, function, size);
    memcpy(out + RESPONSE_HEAD, image + start, size);
    return RESPONSE_HEAD + size;
}

/* -- connections ----------------------------------------------------------------------------- */

static void connection_close(struct server *server, struct connection *conn)
{
    epoll_ctl(server->epoll_fd, EPOLL_CTL_DEL, conn->source.fd, NULL);
    close(conn->source.fd);
    free(conn->pending);
    free(conn);
    server->stats.open--;
}

static size_t pending_bytes(const struct connection *conn)
{
    return conn->pending_len - conn->pending_off;
}

/* Watch for what the connection can use now; false if epoll refused (the connection is closed). */
static bool connection_update_events(struct server *server, struct connection *conn)
{
    uint32_t wanted = 0;
    if (!conn->closing && pending_bytes(conn) < MAX_PENDING)
        wanted |= EPOLLIN;
    if (pending_bytes(conn))
        wanted |= EPOLLOUT;
    if (wanted == conn->events)
        return true;
    if (!epoll_set(server, EPOLL_CTL_MOD, &conn->source, wanted)) {
        connection_close(server, conn);
        return false;
    }
    conn->events = wanted;
    return true;
}

/* Stop reading; close once what was answered so far has been sent (as asyncio's close() does). */
static bool connection_begin_close(struct server *server, struct connection *conn)
{
    conn->closing = true;
    if (!pending_bytes(conn)) {
        connection_close(server, conn);
        return false;
    }
    return connection_update_events(server, conn);
}

/* Send as much of `data` as the socket takes now: bytes sent, or -1 if the connection is broken. */
static ssize_t send_some(int fd, const uint8_t *data, size_t size)
{
    size_t sent = 0;
    while (sent < size) {
        ssize_t n = send(fd, data + sent, size - sent, MSG_NOSIGNAL);
        if (n >= 0)
            sent += (size_t)n;
        else if (errno == EAGAIN || errno == EWOULDBLOCK)
            break;
        else if (errno != EINTR)
            return -1;
    }
    return (ssize_t)sent;
}

static bool pending_append(struct connection *conn, const uint8_t *data, size_t size)
{
    if (conn->pending_off) { /* keep the unsent bytes at the front, so the buffer only grows for real backlog */
        memmove(conn->pending, conn->pending + conn->pending_off, pending_bytes(conn));
        conn->pending_len -= conn->pending_off;
        conn->pending_off = 0;
    }
    if (conn->pending_len + size > conn->pending_cap) {
        size_t cap = conn->pending_cap ? conn->pending_cap : 4096;
        while (cap < conn->pending_len + size)
            cap *= 2;
        uint8_t *grown = realloc(conn->pending, cap);
        if (grown == NULL)
            return false;
        conn->pending = grown;
        conn->pending_cap = cap;
    }
    memcpy(conn->pending + conn->pending_len, data, size);
    conn->pending_len += size;
    return true;
}

/* Queue `data` behind anything still pending, sending right away when nothing is. */
static bool connection_send(struct server *server, struct connection *conn, const uint8_t *data, size_t size)
{
    if (!pending_bytes(conn)) {
        ssize_t sent = send_some(conn->source.fd, data, size);
        if (sent < 0) {
            connection_close(server, conn);
            return false;
        }
        data += sent;
        size -= (size_t)sent;
    }
    if (size && !pending_append(conn, data, size)) {
        fprintf(stderr, PROGRAM ": out of memory for a connection's output: closing it\n");
        connection_close(server, conn);
        return false;
    }
    return connection_update_events(server, conn);
}

/* The socket takes more: send what is pending, and close if that was all a closing connection owed. */
static bool connection_flush(struct server *server, struct connection *conn)
{
    ssize_t sent = send_some(conn->source.fd, conn->pending + conn->pending_off, pending_bytes(conn));
    if (sent < 0) {
        connection_close(server, conn);
        return false;
    }
    conn->pending_off += (size_t)sent;
    if (!pending_bytes(conn)) {
        conn->pending_off = conn->pending_len = 0;
        if (conn->closing) {
            connection_close(server, conn);
            return false;
        }
    }
    return connection_update_events(server, conn);
}

/* One read: answer every complete frame in it, all answers in one write. */
static void connection_read(struct server *server, struct connection *conn)
{
    uint8_t *buf = server->input;
    memcpy(buf, conn->partial, conn->partial_len);
    ssize_t n = recv(conn->source.fd, buf + conn->partial_len, READ_CHUNK, 0);
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            connection_close(server, conn); /* reset: nothing pending can be delivered */
        return;
    }
    if (n == 0) { /* the client closed its side: like asyncio, flush what it is owed and close */
        connection_begin_close(server, conn);
        return;
    }

    size_t end = conn->partial_len + (size_t)n, pos = 0, out = 0;
    long long answered = 0;
    double now_s = clock_s(CLOCK_REALTIME);
    while (end - pos >= REQUEST_HEAD) {
        unsigned length = be16(buf + pos + 4);
        if (length < 2 || length > MAX_FRAME_LENGTH) {
            /* Not Modbus TCP: a real device drops the link too. As in the Python
             * server, the answers of this read are dropped with it. */
            connection_begin_close(server, conn);
            return;
        }
        size_t frame_end = pos + MBAP_PREFIX + length;
        if (frame_end > end)
            break;
        out += answer(server, conn->listener, buf + pos, length, now_s, server->answers + out);
        answered++;
        pos = frame_end;
    }
    conn->partial_len = end - pos;
    memcpy(conn->partial, buf + pos, conn->partial_len);
    if (answered) {
        server->stats.requests += answered;
        connection_send(server, conn, server->answers, out);
    }
}

static void connection_on_event(struct server *server, struct connection *conn, uint32_t events)
{
    if ((events & (EPOLLERR | EPOLLHUP)) && !(conn->events & EPOLLIN)) {
        connection_close(server, conn); /* not reading, and the peer takes nothing more */
        return;
    }
    if ((events & EPOLLOUT) && !connection_flush(server, conn))
        return;
    if ((conn->events & EPOLLIN) && (events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
        connection_read(server, conn);
}

/* -- listeners ------------------------------------------------------------------------------- */

/* Out of file descriptors: stop watching this listener for a second instead of
 * spinning on it; the client waits in the backlog (asyncio does the same). */
static void listener_pause(struct server *server, struct listener *listener, int error)
{
    fprintf(stderr, PROGRAM ": accept on %s:%d: %s; retrying in 1 s\n", HOST, listener->port, strerror(error));
    if (epoll_set(server, EPOLL_CTL_MOD, &listener->source, 0)) {
        listener->paused = true;
        server->listeners_paused = true;
    }
}

static void listeners_resume(struct server *server)
{
    for (int i = 0; i < server->listener_count; i++) {
        struct listener *listener = &server->listeners[i];
        if (listener->paused && epoll_set(server, EPOLL_CTL_MOD, &listener->source, EPOLLIN))
            listener->paused = false;
    }
    server->listeners_paused = false;
}

static void listener_accept(struct server *server, struct listener *listener)
{
    for (;;) {
        int fd = accept4(listener->source.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                listener_pause(server, listener, errno);
            return; /* EAGAIN: the backlog is empty */
        }
        int one = 1; /* answers go out at once, as from asyncio's transports */
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct connection *conn = calloc(1, sizeof *conn);
        if (conn == NULL) {
            close(fd);
            continue;
        }
        conn->source = (struct source){.kind = SOURCE_CONNECTION, .fd = fd};
        conn->listener = listener;
        conn->events = EPOLLIN;
        if (!epoll_set(server, EPOLL_CTL_ADD, &conn->source, conn->events)) {
            close(fd);
            free(conn);
            continue;
        }
        stats_on_accept(&server->stats);
    }
}

/* Bind one listener on HOST:wanted (0: ephemeral); false after saying why on stderr. */
static bool listener_open(struct server *server, struct listener *listener, int wanted)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        fprintf(stderr, PROGRAM ": cannot listen on %s:%d: %s\n", HOST, wanted, strerror(errno));
        return false;
    }
    int one = 1; /* a restarted fleet can rebind a --base-port whose old connections linger */
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t)wanted)};
    inet_pton(AF_INET, HOST, &address.sin_addr);
    socklen_t size = sizeof address;
    if (bind(fd, (struct sockaddr *)&address, sizeof address) < 0 || listen(fd, LISTEN_BACKLOG) < 0
        || getsockname(fd, (struct sockaddr *)&address, &size) < 0) {
        fprintf(stderr, PROGRAM ": cannot listen on %s:%d: %s\n", HOST, wanted, strerror(errno));
        close(fd);
        return false;
    }
    listener->source = (struct source){.kind = SOURCE_LISTENER, .fd = fd};
    listener->port = ntohs(address.sin_port);
    if (!epoll_set(server, EPOLL_CTL_ADD, &listener->source, EPOLLIN)) {
        close(fd);
        return false;
    }
    return true;
}

/* Meters and listeners for every port; false (listeners closed) if one cannot be bound. */
static bool open_ports(struct server *server, int base_port, int port_count, long long seed)
{
    struct rng rng = {.state = (uint64_t)seed};
    double now_s = clock_s(CLOCK_REALTIME);
    server->listeners = calloc((size_t)port_count, sizeof *server->listeners);
    if (server->listeners == NULL) {
        fprintf(stderr, PROGRAM ": out of memory for %d ports\n", port_count);
        return false;
    }
    for (int i = 0; i < port_count; i++) {
        struct listener *listener = &server->listeners[i];
        listener->meters = calloc((size_t)server->units_per_port, sizeof *listener->meters);
        if (listener->meters == NULL) {
            fprintf(stderr, PROGRAM ": out of memory for %d ports\n", port_count);
            return false;
        }
        for (int unit = 0; unit < server->units_per_port; unit++)
            meter_init(&listener->meters[unit], &rng, now_s);
        if (!listener_open(server, listener, base_port ? base_port + i : 0)) {
            for (int j = 0; j < i; j++)
                close(server->listeners[j].source.fd);
            return false;
        }
        server->listener_count = i + 1;
    }
    return true;
}

static void print_ports(const struct server *server)
{
    printf("{\"ports\": [");
    for (int i = 0; i < server->listener_count; i++)
        printf(i ? ", %d" : "%d", server->listeners[i].port);
    printf("], \"units_per_port\": %d, \"pid\": %d}\n", server->units_per_port, (int)getpid());
    fflush(stdout);
}

/* -- signals and the loop -------------------------------------------------------------------- */

/* SIGUSR1 reports, SIGTERM/SIGINT stop. They are blocked from the start and read
 * here from the signalfd, so they act between events, never inside one. */
static void signals_read(struct server *server)
{
    struct signalfd_siginfo info;
    while (read(server->signals.fd, &info, sizeof info) == (ssize_t)sizeof info) {
        if (info.ssi_signo == SIGUSR1)
            stats_report(&server->stats);
        else
            server->stopping = true;
    }
}

static long long monotonic_ms(void)
{
    return (long long)(clock_s(CLOCK_MONOTONIC) * 1000.0);
}

/* Serve until a signal stops us or the parent dies (true), or the loop breaks (false). */
static bool serve(struct server *server)
{
    struct epoll_event events[MAX_EVENTS];
    long long next_housekeeping = monotonic_ms() + HOUSEKEEPING_MS;

    while (!server->stopping) {
        long long wait_ms = next_housekeeping - monotonic_ms();
        int count = epoll_wait(server->epoll_fd, events, MAX_EVENTS, wait_ms > 0 ? (int)wait_ms : 0);
        if (count < 0 && errno != EINTR) {
            fprintf(stderr, PROGRAM ": epoll_wait: %s\n", strerror(errno));
            return false;
        }
        for (int i = 0; i < count; i++) {
            struct source *source = events[i].data.ptr;
            switch (source->kind) {
            case SOURCE_SIGNALS:
                signals_read(server);
                break;
            case SOURCE_LISTENER:
                listener_accept(server, (struct listener *)source);
                break;
            case SOURCE_CONNECTION:
                connection_on_event(server, (struct connection *)source, events[i].events);
                break;
            }
        }
        /* Checked by the clock, not only on timeouts: a busy fleet never times out. */
        if (monotonic_ms() >= next_housekeeping) {
            if (getppid() != server->parent) /* orphaned: the harness is gone */
                return true;
            if (server->listeners_paused)
                listeners_resume(server);
            next_housekeeping = monotonic_ms() + HOUSEKEEPING_MS;
        }
    }
    return true;
}

/* -- command line ------------------------------------------------------------------------------ */

struct options {
    int base_port, ports, units_per_port;
    long long seed;
};

static const char USAGE[] =
    "usage: " PROGRAM " [-h] [--base-port BASE_PORT] [--ports PORTS] [--units-per-port UNITS_PER_PORT]"
    " [--seed SEED]\n";

static const char HELP[] =
    "\nA lean Modbus TCP server standing in for a fleet of PAC3200 meters.\n\n"
    "options:\n"
    "  -h, --help            show this help message and exit\n"
    "  --base-port BASE_PORT\n"
    "                        first port (binds P..P+K-1); 0 (default) binds ephemeral ports\n"
    "  --ports PORTS         number of listening ports (K)\n"
    "  --units-per-port UNITS_PER_PORT\n"
    "                        unit ids 1..U on every port\n"
    "  --seed SEED           random seed of the simulated loads\n";

/* Like argparse's parser.error(): usage and the message on stderr, exit status 2. */
static void usage_error(const char *format, ...) __attribute__((noreturn, format(printf, 1, 2)));

static void usage_error(const char *format, ...)
{
    va_list args;
    va_start(args, format);
    fputs(USAGE, stderr);
    fputs(PROGRAM ": error: ", stderr);
    vfprintf(stderr, format, args);
    fputc('\n', stderr);
    va_end(args);
    exit(2);
}

static long long parse_int(const char *option, const char *text, long long low, long long high)
{
    char *end;
    errno = 0;
    long long value = strtoll(text, &end, 10);
    if (end == text || *end != '\0' || errno == ERANGE || value < low || value > high)
        usage_error("argument %s: invalid int value: '%s'", option, text);
    return value;
}

static struct options parse_options(int argc, char **argv)
{
    enum { OPT_BASE_PORT = 1000, OPT_PORTS, OPT_UNITS, OPT_SEED };
    static const struct option LONG_OPTIONS[] = {
        {"help", no_argument, NULL, 'h'},
        {"base-port", required_argument, NULL, OPT_BASE_PORT},
        {"ports", required_argument, NULL, OPT_PORTS},
        {"units-per-port", required_argument, NULL, OPT_UNITS},
        {"seed", required_argument, NULL, OPT_SEED},
        {NULL, 0, NULL, 0},
    };
    struct options options = {.base_port = 0, .ports = 1, .units_per_port = 10, .seed = 1};
    int option;

    opterr = 0; /* our own messages, in argparse's shape; the leading ':' tells a missing value apart */
    while ((option = getopt_long(argc, argv, ":h", LONG_OPTIONS, NULL)) != -1) {
        switch (option) {
        case 'h':
            fputs(USAGE, stdout);
            fputs(HELP, stdout);
            exit(0);
        case OPT_BASE_PORT:
            options.base_port = (int)parse_int("--base-port", optarg, INT32_MIN, INT32_MAX);
            break;
        case OPT_PORTS:
            options.ports = (int)parse_int("--ports", optarg, INT32_MIN, INT32_MAX);
            break;
        case OPT_UNITS:
            options.units_per_port = (int)parse_int("--units-per-port", optarg, INT32_MIN, INT32_MAX);
            break;
        case OPT_SEED:
            options.seed = parse_int("--seed", optarg, LLONG_MIN, LLONG_MAX);
            break;
        case ':':
            usage_error("argument %s: expected one argument", argv[optind - 1]);
        default:
            usage_error("unrecognized arguments: %s", argv[optind - 1]);
        }
    }
    if (optind < argc)
        usage_error("unrecognized arguments: %s", argv[optind]);
    if (options.ports < 1)
        usage_error("--ports must be >= 1");
    if (options.units_per_port < 1 || options.units_per_port > MAX_UNITS_PER_PORT)
        usage_error("--units-per-port must be 1..%d", MAX_UNITS_PER_PORT);
    if (options.base_port && !(1 <= options.base_port && options.base_port <= 65536 - options.ports))
        usage_error("--base-port leaves no room for --ports listeners");
    return options;
}

/* -- main -------------------------------------------------------------------------------------- */

/* Block the signals we act on before anything else: SIGUSR1's default action
 * kills, and the harness may ask as soon as it has read the ports. */
static int signals_open(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGUSR1);
    if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
        return -1;
    signal(SIGPIPE, SIG_IGN); /* a gone harness makes stdout writes fail, not kill us */
    return signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
}

int main(int argc, char **argv)
{
    static struct server server; /* static: the scratch buffers are too large for the stack */
    int signal_fd = signals_open();
    struct options options = parse_options(argc, argv);

    server.parent = getppid();
    server.units_per_port = options.units_per_port;
    server.epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    if (signal_fd < 0 || server.epoll_fd < 0) {
        fprintf(stderr, PROGRAM ": cannot set up the event loop: %s\n", strerror(errno));
        return 1;
    }
    server.signals = (struct source){.kind = SOURCE_SIGNALS, .fd = signal_fd};
    if (!epoll_set(&server, EPOLL_CTL_ADD, &server.signals, EPOLLIN))
        return 1;
    if (!open_ports(&server, options.base_port, options.ports, options.seed))
        return 1;
    print_ports(&server);

    bool clean = serve(&server);

    for (int i = 0; i < server.listener_count; i++)
        close(server.listeners[i].source.fd);
    stats_print(&server.stats);
    return clean ? 0 : 1;
}
