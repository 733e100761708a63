#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fuse_lowlevel.h>

#include "auth.h"
#include "cache.h"
#include "fs.h"
#include "http.h"
#include "keeper.h"
#include "log.h"
#include "manifest.h"
#include "ops.h"
#include "push.h"
#include "ref.h"
#include "registry.h"
#include "sign.h"
#include "tree.h"

struct options {
	char *source;
	char *mountpoint;
	char *cache_dir;
	char *platform;
	char *ca_file;
	char *cache_size;
	char *chunk_size;
	char *verify;
	char *auth_file;
	char *cert_file;
	char *key_file;
	char *artifact_type;
	char *index_trust;
	char *index_sign_key;
	struct strlist mirrors;
	unsigned uid;
	unsigned gid;
	int uid_set;
	int gid_set;
	unsigned tag_ttl;
	unsigned list_ttl;
	unsigned page_size;
	unsigned max_streams;
	unsigned read_ahead_kb;
	unsigned timeout;
	unsigned push_delay;
	unsigned connect_timeout;
	unsigned stall_timeout;
	unsigned retry_delay_ms;
	unsigned helper_timeout;
	unsigned token_min_ttl;
	unsigned negative_timeout;
	int ro;
	int allow_other; /* FUSE options, seen here to warn about allow_other alone */
	int default_permissions;
	int plain_http;
	int insecure;
	int show_referrer_tags;
	int publish_index;
	int no_keeper;
	int show_help;
	int show_version;
};

/* clang-format off */
#define OPT(t, p) { t, offsetof(struct options, p), 1 }
/* clang-format on */

enum { KEY_RO, KEY_HELP, KEY_VERSION, KEY_MIRROR, KEY_ALLOW_OTHER, KEY_DEFAULT_PERMISSIONS };

static const struct fuse_opt option_spec[] = {
	OPT("cache_dir=%s", cache_dir),
	OPT("platform=%s", platform),
	OPT("ca_file=%s", ca_file),
	OPT("cache_size=%s", cache_size),
	OPT("chunk_size=%s", chunk_size),
	OPT("verify=%s", verify),
	OPT("auth_file=%s", auth_file),
	OPT("cert_file=%s", cert_file),
	OPT("key_file=%s", key_file),
	OPT("tag_ttl=%u", tag_ttl),
	OPT("list_ttl=%u", list_ttl),
	OPT("page_size=%u", page_size),
	OPT("max_streams=%u", max_streams),
	OPT("read_ahead_kb=%u", read_ahead_kb),
	OPT("timeout=%u", timeout),
	OPT("push_delay=%u", push_delay),
	OPT("connect_timeout=%u", connect_timeout),
	OPT("stall_timeout=%u", stall_timeout),
	OPT("retry_delay_ms=%u", retry_delay_ms),
	OPT("helper_timeout=%u", helper_timeout),
	OPT("token_min_ttl=%u", token_min_ttl),
	OPT("negative_timeout=%u", negative_timeout),
	OPT("artifact_type=%s", artifact_type),
	OPT("index_trust=%s", index_trust),
	OPT("index_sign_key=%s", index_sign_key),
	OPT("plain_http", plain_http),
	OPT("show_referrer_tags", show_referrer_tags),
	OPT("publish_index", publish_index),
	OPT("no_keeper", no_keeper),
	OPT("insecure", insecure),
	OPT("uid=%u", uid),
	OPT("uid=", uid_set),
	OPT("gid=%u", gid),
	OPT("gid=", gid_set),
	FUSE_OPT_KEY("mirror=", KEY_MIRROR),
	FUSE_OPT_KEY("ro", KEY_RO),
	FUSE_OPT_KEY("allow_other", KEY_ALLOW_OTHER),
	FUSE_OPT_KEY("default_permissions", KEY_DEFAULT_PERMISSIONS),
	FUSE_OPT_KEY("-h", KEY_HELP),
	FUSE_OPT_KEY("--help", KEY_HELP),
	FUSE_OPT_KEY("-V", KEY_VERSION),
	FUSE_OPT_KEY("--version", KEY_VERSION),
	FUSE_OPT_END,
};

/* default of -o read_ahead_kb: requests of max_write (fs.c) */
#define READ_AHEAD_KB 1024

/* -o read_ahead_kb, for set_read_ahead() */
static unsigned read_ahead_kb = 1024;

/*
 * Set the kernel's read-ahead of the mount at path (absolute, resolved) to
 * read_ahead_kb KiB, through its backing device in sysfs. The kernel's
 * default (128 KiB) splits a sequential read into FUSE requests of 128 to
 * 256 KiB; at 1 MiB they fill max_write. The kernel takes the lower of this
 * and the max_readahead of fs_init() once it has the INIT reply. It cannot
 * stat the mount itself (that waits for INIT): the device is in mountinfo.
 * Root only; a failure costs speed, not correctness, so it is only logged.
 */
static void set_read_ahead(const char *path)
{
	char dev[32], sys[96];
	int fd;

	if (read_ahead_kb == 0 || keeper_mount_device(path, dev, sizeof(dev)))
		return;
	snprintf(sys, sizeof(sys), "/sys/class/bdi/%s/read_ahead_kb", dev);
	fd = open(sys, O_WRONLY | O_CLOEXEC);
	if (fd < 0 || dprintf(fd, "%u\n", read_ahead_kb) < 0)
		log_debug("read_ahead_kb: %s: %s", sys, strerror(errno));
	if (fd >= 0)
		close(fd);
}

static void usage(const char *prog)
{
	printf("usage: %s [options] SOURCE MOUNTPOINT\n"
	       "       %s --restart MOUNTPOINT   a new server takes over the mount\n"
	       "\n"
	       "SOURCE is one of:\n"
	       "    -                        every registry: MOUNTPOINT/HOST[:PORT]/...\n"
	       "    HOST[:PORT]              one registry\n"
	       "    HOST[:PORT]/REPO         one repository (its tags)\n"
	       "    HOST[:PORT]/REPO:TAG     one artifact (its files)\n"
	       "    HOST[:PORT]/REPO@DIGEST  one artifact, by digest\n"
	       "\n"
	       "ocifs options:\n"
	       "    -o ro                    read-only mount\n"
	       "    -o cache_dir=DIR         blob cache (default $XDG_CACHE_HOME/ocifs,\n"
	       "                             /var/cache/ocifs for root)\n"
	       "    -o platform=OS/ARCH[/VARIANT]  index child to show (default: this host's)\n"
	       "    -o uid=N,gid=N           owner of every file (default: the mounting user)\n"
	       "    -o cache_size=SIZE       bound on cached blobs, LRU evicted (K/M/G; 0 or\n"
	       "                             unlimited for none; default 10%% of the cache's\n"
	       "                             file system, keeping 5%% of it free)\n"
	       "    -o chunk_size=SIZE       bytes per ranged fetch (power of two, 64K..64M; 1M)\n"
	       "    -o max_streams=N         parallel range requests at most (1..256; 32):\n"
	       "                             from 6, doubled while more fetch more\n"
	       "    -o read_ahead_kb=N       the kernel's read-ahead on this mount (1024; 0:\n"
	       "                             the kernel's default, 128)\n"
	       "    -o verify=strict         withhold every byte of a blob until it verified\n"
	       "                             (default verify=end: only its last bytes)\n"
	       "    -o tag_ttl=SECS          how long a tag's resolution is trusted (default 30)\n"
	       "    -o list_ttl=SECS         how long a listing is trusted (default 30)\n"
	       "    -o page_size=N           entries asked per page of a listing (default 1000)\n"
	       "    -o timeout=SECS          how long a failing request is retried, then EIO (30)\n"
	       "    -o retry_delay_ms=MS     first wait before a retry, doubled up to 50 times\n"
	       "                             it; a failed push is tried again after the longest\n"
	       "                             (default 100)\n"
	       "    -o connect_timeout=SECS  how long a connection may take (default 30)\n"
	       "    -o stall_timeout=SECS    a transfer under 1 byte/s this long is cut and\n"
	       "                             retried (default 30)\n"
	       "    -o helper_timeout=SECS   how long a credential helper may take, then it is\n"
	       "                             killed and the lookup goes on anonymously (10)\n"
	       "    -o token_min_ttl=SECS    shortest lifetime given a registry token, whatever\n"
	       "                             its expires_in (default 60, the spec's floor)\n"
	       "    -o negative_timeout=SECS how long the kernel keeps a name's absence (1)\n"
	       "    -o plain_http            talk plain HTTP to the registry\n"
	       "    -o insecure              do not verify TLS certificates\n"
	       "    -o ca_file=FILE          extra CA certificates (PEM)\n"
	       "    -o cert_file=FILE,key_file=FILE  client certificate and key (mutual TLS)\n"
	       "    -o auth_file=FILE        credentials (docker config.json / auth.json format),\n"
	       "                             tried before the usual files\n"
	       "    -o show_referrer_tags    list sha256-<hex> tags (fallback referrers indexes)\n"
	       "    -o publish_index         push each image layer indexed here as a referrer\n"
	       "                             of its image, for other mounts to read it lazily\n"
	       "    -o index_sign_key=FILE   sign what publish_index pushes (PEM private key,\n"
	       "                             EC P-256 or larger), as cosign sign --key does\n"
	       "    -o index_trust=FILE      use a published layer index only when signed by a\n"
	       "                             key of FILE (PEM public keys, as cosign.pub)\n"
	       "    -o push_delay=SECS       rest of a tag directory before its push (default 1)\n"
	       "    -o no_keeper             serve from this process alone: no keeper holds the\n"
	       "                             mount, which ends if it dies (see RESTARTS in "
	       "ocifs(1))\n"
	       "    -o artifact_type=TYPE    artifactType of new tags\n"
	       "                             (default application/vnd.unknown.artifact.v1)\n"
	       "    -o mirror=URL            pull through a mirror first (repeatable, in order):\n"
	       "                             [http[s]://]HOST[:PORT][/PREFIX]; it serves the\n"
	       "                             mounted registry, or Docker Hub when SOURCE is -\n"
	       "\n",
		prog, prog);
	printf("FUSE options:\n");
	fuse_cmdline_help();
	fuse_lowlevel_help();
}

static int opt_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
	struct options *o = data;

	/* fuse_opt sees "-" (the every-registry SOURCE) as an option */
	if (key == FUSE_OPT_KEY_OPT && strcmp(arg, "-") == 0)
		key = FUSE_OPT_KEY_NONOPT;
	switch (key) {
	case FUSE_OPT_KEY_NONOPT:
		if (!o->source) {
			o->source = strdup(arg);
			return 0;
		}
		if (!o->mountpoint) {
			/* checked here so that its error reads like every other one */
			o->mountpoint = strdup(arg);
			return 0;
		}
		fprintf(stderr, "%s: unexpected argument \"%s\"\n", PACKAGE_NAME, arg);
		return -1;
	case KEY_MIRROR:
		if (!registry_mirror_valid(arg + 7)) {
			fprintf(stderr,
				"%s: invalid mirror \"%s\": expected "
				"[http[s]://]HOST[:PORT][/PREFIX]\n",
				PACKAGE_NAME, arg + 7);
			return -1;
		}
		return strlist_add(&o->mirrors, arg + 7) ? -1 : 0;
	case KEY_RO:
		o->ro = 1;
		return 1; /* the kernel gets it too */
	case KEY_ALLOW_OTHER:
		o->allow_other = 1;
		return 1; /* for libfuse */
	case KEY_DEFAULT_PERMISSIONS:
		o->default_permissions = 1;
		return 1;
	case KEY_HELP:
		o->show_help = 1;
		return 0;
	case KEY_VERSION:
		o->show_version = 1;
		return 0;
	default:
		return 1;
	}
}

/* "123", "64K", "1M", "2G" (powers of 1024) into bytes; 0 or -EINVAL. */
static int parse_size(const char *s, uint64_t *out)
{
	unsigned long long v;
	char *end;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *s == '-')
		return -EINVAL;
	switch (*end) {
	case 'g':
	case 'G':
		v <<= 10;
		/* fall through */
	case 'm':
	case 'M':
		v <<= 10;
		/* fall through */
	case 'k':
	case 'K':
		v <<= 10;
		end++;
		break;
	default:
		break;
	}
	if (*end == 'i' || *end == 'B' || *end == 'b')
		end += *end == 'i' && (end[1] == 'B' || end[1] == 'b') ? 2 : 1;
	if (*end)
		return -EINVAL;
	*out = v;
	return 0;
}

/* SIGHUP: a byte down this pipe to hup_main (a 0 byte: stop). */
static int hup_pipe[2] = { -1, -1 };

struct hup {
	struct fuse_session *se;
	struct tree *t;
};

/* The session a detached daemon's SIGINT and SIGTERM end (see keep_stop_signals). */
static struct fuse_session *stop_se;

static void on_stop(int sig)
{
	(void)sig;
	if (stop_se)
		fuse_session_exit(stop_se);
}

/*
 * libfuse leaves a signal that was ignored at start ignored: a background
 * job of a script has SIGINT ignored, and a daemon it started would then
 * never stop on kill -INT. Detached (its own session, no terminal to send
 * it a Ctrl-C), SIGINT and SIGTERM stop it as they stop any other.
 */
static void keep_stop_signals(struct fuse_session *se)
{
	static const int sigs[] = { SIGINT, SIGTERM };
	struct sigaction sa, old;
	size_t i;

	stop_se = se;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_stop;
	sigemptyset(&sa.sa_mask);
	for (i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		if (sigaction(sigs[i], NULL, &old) == 0 && old.sa_handler == SIG_IGN)
			sigaction(sigs[i], &sa, NULL);
}

static void on_hup(int sig)
{
	char c = 1;
	int saved = errno;

	(void)sig;
	if (write(hup_pipe[1], &c, 1) < 0) {
		/* the pipe is full: a forget is pending already */
	}
	errno = saved;
}

static void *hup_main(void *arg)
{
	struct hup *h = arg;
	char c;

	while (read(hup_pipe[0], &c, 1) == 1 && c) {
		log_reopen();
		log_info("SIGHUP: tag resolutions and listings forgotten, log reopened");
		fs_forget_tags(h->se, h->t);
	}
	return NULL;
}

static char *default_cache_dir(void)
{
	const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
	char path[PATH_MAX];

	if (geteuid() == 0)
		return strdup("/var/cache/ocifs");
	if (xdg && *xdg)
		snprintf(path, sizeof(path), "%s/ocifs", xdg);
	else if (home && *home)
		snprintf(path, sizeof(path), "%s/.cache/ocifs", home);
	else
		return NULL;
	return strdup(path);
}

/* Whether a time option's value v is in [lo, hi]; says why not. */
static bool time_opt_valid(const char *name, unsigned v, unsigned lo, unsigned hi)
{
	if (v >= lo && v <= hi)
		return true;
	fprintf(stderr, "%s: invalid %s %u: %u to %u\n", PACKAGE_NAME, name, v, lo, hi);
	return false;
}

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct options o = { .tag_ttl = 30,
		.list_ttl = 30,
		.timeout = 30,
		.push_delay = 1,
		.connect_timeout = 30,
		.stall_timeout = 30,
		.retry_delay_ms = 100,
		.helper_timeout = AUTH_HELPER_TIMEOUT_MS / 1000,
		.token_min_ttl = AUTH_TOKEN_MIN_TTL,
		.negative_timeout = 1,
		.read_ahead_kb = READ_AHEAD_KB };
	struct fuse_cmdline_opts cl = { 0 };
	struct fuse_loop_config lc = { 0 };
	struct http_options ho = { 0 };
	struct cache_options co = { 0 };
	uint64_t chunk = 0;
	struct tree_options to = { .kind_ops = node_kind_ops };
	struct fuse_session *se = NULL;
	char mnt_real[PATH_MAX];
	struct ref source = { 0 };
	struct cache *cache = NULL;
	struct sign_keys *trust = NULL;
	struct sign_key *sign_key = NULL;
	struct http *http = NULL;
	struct tree *tree = NULL;
	struct hup hup = { NULL, NULL };
	pthread_t hup_thread;
	bool hup_started = false;
	char fsname[PATH_MAX];
	struct stat st;
	unsigned restarts = 0;
	int ksock = keeper_server_sock(&restarts);
	int ret = 1;

	/*
	 * Few malloc arenas: what forgotten inodes free goes back to the system
	 * (malloc_trim) instead of staying spread over an arena per thread. A
	 * fixed mmap threshold: big arrays (a layer's tar index) stay mapped of
	 * their own and go back whole when freed, where glibc's sliding one
	 * would put the next image's in the heap, among small live chunks.
	 */
	mallopt(M_ARENA_MAX, 2);
	mallopt(M_MMAP_THRESHOLD, 256 * 1024);
	if (argc >= 2 && strcmp(argv[1], "--restart") == 0) {
		if (argc != 3) {
			fprintf(stderr, "%s: usage: %s --restart MOUNTPOINT\n", PACKAGE_NAME,
				argv[0]);
			return 1;
		}
		return keeper_restart(argv[2]);
	}
	if (fuse_opt_parse(&args, &o, option_spec, opt_proc) == -1)
		goto out_args;
	if (o.show_version) {
		printf("%s %s\n", PACKAGE_NAME, PACKAGE_VERSION);
		printf("using libfuse %s\n", fuse_pkgversion());
		ret = 0;
		goto out_args;
	}
	if (o.show_help) {
		usage(argv[0]);
		ret = 0;
		goto out_args;
	}
	if (fuse_parse_cmdline(&args, &cl) != 0)
		goto out_args;
	if (!o.source || !o.mountpoint) {
		fprintf(stderr, "%s: usage: %s [options] SOURCE MOUNTPOINT (see --help)\n",
			PACKAGE_NAME, argv[0]);
		goto out_cl;
	}
	if (ref_parse_source(o.source, &source)) {
		fprintf(stderr,
			"%s: invalid SOURCE \"%s\": expected -, HOST[:PORT], "
			"HOST[:PORT]/REPO, HOST[:PORT]/REPO:TAG or HOST[:PORT]/REPO@DIGEST\n",
			PACKAGE_NAME, o.source);
		goto out_cl;
	}
	/* a server under a keeper: mounted there, and a stat would ask this very server */
	if (ksock >= 0) {
		/* checked by the keeper */
	} else if (stat(o.mountpoint, &st)) {
		fprintf(stderr, "%s: mount point %s: %s\n", PACKAGE_NAME, o.mountpoint,
			strerror(errno));
		goto out_ref;
	} else if (!S_ISDIR(st.st_mode)) {
		fprintf(stderr, "%s: mount point %s: not a directory\n", PACKAGE_NAME,
			o.mountpoint);
		goto out_ref;
	}
	log_init(false, cl.debug);
	if (o.allow_other && !o.default_permissions)
		log_warn("allow_other without default_permissions: every user of this machine "
			 "reaches what the mount shows, with the mounting user's rights; add "
			 "default_permissions to have the kernel check modes and owners");

	if (o.platform) {
		if (platform_parse(o.platform, &to.platform)) {
			fprintf(stderr, "%s: invalid platform \"%s\": expected OS/ARCH[/VARIANT]\n",
				PACKAGE_NAME, o.platform);
			goto out_ref;
		}
	} else if (platform_host(&to.platform)) {
		fprintf(stderr, "%s: cannot tell this host's platform: use -o platform=\n",
			PACKAGE_NAME);
		goto out_ref;
	}
	/* No bound is asked for by name, or by 0 as ccache's max_size has it. */
	if (o.cache_size && strcmp(o.cache_size, "unlimited") == 0) {
		co.unbounded = true;
	} else if (o.cache_size && parse_size(o.cache_size, &co.max_bytes)) {
		fprintf(stderr, "%s: invalid cache_size \"%s\": a size (K/M/G) or unlimited\n",
			PACKAGE_NAME, o.cache_size);
		goto out_platform;
	} else if (o.cache_size && co.max_bytes == 0) {
		co.unbounded = true;
	}
	if (o.chunk_size && (parse_size(o.chunk_size, &chunk) || chunk < 65536 ||
				    chunk > 64 * 1024 * 1024 || (chunk & (chunk - 1)))) {
		fprintf(stderr, "%s: invalid chunk_size \"%s\": a power of two, 64K to 64M\n",
			PACKAGE_NAME, o.chunk_size);
		goto out_platform;
	}
	if (!time_opt_valid("connect_timeout", o.connect_timeout, 1, 3600) ||
		!time_opt_valid("stall_timeout", o.stall_timeout, 1, 3600) ||
		!time_opt_valid("retry_delay_ms", o.retry_delay_ms, 1, 60000) ||
		!time_opt_valid("helper_timeout", o.helper_timeout, 1, 3600) ||
		!time_opt_valid("token_min_ttl", o.token_min_ttl, 1, 86400) ||
		!time_opt_valid("negative_timeout", o.negative_timeout, 0, 86400))
		goto out_platform;
	if (o.max_streams > 256) {
		fprintf(stderr, "%s: invalid max_streams %u: 1 to 256\n", PACKAGE_NAME,
			o.max_streams);
		goto out_platform;
	}
	if (o.verify && strcmp(o.verify, "strict") != 0 && strcmp(o.verify, "end") != 0) {
		fprintf(stderr, "%s: invalid verify \"%s\": strict or end\n", PACKAGE_NAME,
			o.verify);
		goto out_platform;
	}
	if (!o.cache_dir)
		o.cache_dir = default_cache_dir();
	if (!o.cache_dir) {
		fprintf(stderr, "%s: no cache directory: use -o cache_dir=\n", PACKAGE_NAME);
		goto out_platform;
	}

	read_ahead_kb = o.read_ahead_kb;
	/* /proc/mounts and df then say what is mounted, as sshfs does */
	snprintf(fsname, sizeof(fsname), "-osubtype=ocifs,fsname=%s", o.source);
	if (fuse_opt_add_arg(&args, fsname))
		goto out_platform;
	if (ksock < 0 && !o.no_keeper) {
		/* this process keeps the mount; the servers are this program run again */
		ret = keeper_run(
			&args, o.mountpoint, cl.foreground, cl.debug, argv, set_read_ahead);
		goto out_platform;
	}

	if (o.index_trust && sign_keys_load(o.index_trust, &trust))
		goto out_platform;
	if (o.index_sign_key && sign_key_load(o.index_sign_key, &sign_key))
		goto out_platform;
	if (o.index_sign_key && !o.publish_index)
		fprintf(stderr, "%s: index_sign_key without publish_index: nothing is signed\n",
			PACKAGE_NAME);

	ho.insecure = o.insecure;
	ho.ca_file = o.ca_file;
	ho.cert_file = o.cert_file;
	ho.key_file = o.key_file;
	ho.connect_timeout = o.connect_timeout;
	/* A stalled transfer is caught by curl's low-speed limit; o.timeout bounds retries. */
	ho.timeout = 0;
	ho.stall_timeout = o.stall_timeout;
	auth_set_helper_timeout(o.helper_timeout * 1000);
	auth_set_token_min_ttl(o.token_min_ttl);
	to.read_only = o.ro;
	to.uid = o.uid_set ? o.uid : getuid();
	to.gid = o.gid_set ? o.gid : getgid();
	to.tag_ttl = o.tag_ttl;
	to.list_ttl = o.list_ttl;
	to.page_size = o.page_size;
	to.plain_http = o.plain_http;
	to.auth_file = o.auth_file;
	to.retry_secs = o.timeout;
	to.retry_delay_ms = o.retry_delay_ms;
	to.negative_timeout = o.negative_timeout;
	to.mirrors = (const char *const *)o.mirrors.v;
	to.push_delay = o.push_delay;
	to.show_referrer_tags = o.show_referrer_tags;
	to.publish_index = o.publish_index;
	to.index_trust = trust;
	to.index_sign_key = sign_key;
	to.artifact_type = o.artifact_type;
	to.mirror_host = source.host ? source.host : "docker.io";

	if (http_new(&ho, &http)) {
		fprintf(stderr, "%s: cannot start the HTTP client\n", PACKAGE_NAME);
		goto out_platform;
	}
	co.dir = o.cache_dir;
	co.chunk_size = (size_t)chunk;
	co.max_streams = o.max_streams;
	co.verify_strict = o.verify && strcmp(o.verify, "strict") == 0;
	if (cache_new(&co, &cache))
		goto out_http;
	if (tree_new(&source, &to, http, cache, &tree))
		goto out_cache;
	/*
	 * Fail here, with the registry's reason, rather than after mounting. A
	 * server taking over a mount serves what it can even with the registry away.
	 */
	if (tree_check_root(tree) && restarts == 0)
		goto out_tree;

	se = fuse_session_new(&args, &fs_ops, sizeof(fs_ops), tree);
	if (!se)
		goto out_tree;
	fs_watch(se, tree);
	if (fuse_set_signal_handlers(se) != 0)
		goto out_session;
	/* libfuse makes SIGHUP end the session: here it forgets tags and reopens the log */
	if (pipe2(hup_pipe, O_CLOEXEC) == 0) {
		struct sigaction sa;

		/* the handler must never block: a full pipe has a forget pending anyway */
		fcntl(hup_pipe[1], F_SETFL, O_NONBLOCK);
		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = on_hup;
		sa.sa_flags = SA_RESTART;
		sigemptyset(&sa.sa_mask);
		sigaction(SIGHUP, &sa, NULL);
	}
	if (ksock >= 0) {
		/* the keeper mounted: the descriptor and the journal come from it */
		if (keeper_attach(ksock, se))
			goto out_signals;
		if (!cl.foreground)
			log_init(true, cl.debug);
	} else {
		if (!realpath(o.mountpoint,
			    mnt_real)) /* before the mount: stat would wait for INIT */
			mnt_real[0] = '\0';
		if (fuse_session_mount(se, o.mountpoint) != 0)
			goto out_signals;
		if (mnt_real[0])
			set_read_ahead(mnt_real);
		if (fuse_daemonize(cl.foreground) != 0)
			goto out_unmount;
		if (!cl.foreground)
			log_init(true, cl.debug);
	}
	if (!cl.foreground)
		keep_stop_signals(se);
	if (cache_start(cache) || push_start(tree, fs_take_over))
		goto out_unmount;
	hup.se = se;
	hup.t = tree;
	hup_started = hup_pipe[0] >= 0 && pthread_create(&hup_thread, NULL, hup_main, &hup) == 0;
	if (ksock >= 0)
		keeper_serving(!cl.foreground);

	/* one reader of the keeper's descriptor: a clone would die with this server */
	lc.clone_fd = ksock >= 0 ? 0 : cl.clone_fd;
	/*
	 * libfuse leaves it "unset" (UINT_MAX) unless -o max_idle_threads= is
	 * given. The kernel's read-ahead keeps several reads in flight per
	 * reader: with 4 idle threads at most, libfuse made and ended about 60
	 * threads per GiB read from the cache; 16 stay.
	 */
	lc.max_idle_threads = cl.max_idle_threads <= 100000 ? cl.max_idle_threads : 16;
	ret = cl.singlethread ? fuse_session_loop(se) : fuse_session_loop_mt(se, &lc);
	/* a signal number (SIGTERM, SIGINT) is how it was asked to stop: not a failure */
	ret = ret < 0 ? 1 : 0;

out_unmount:
	if (hup_started) {
		char stop = 0;

		signal(SIGHUP, SIG_IGN);
		if (write(hup_pipe[1], &stop, 1) == 1)
			pthread_join(hup_thread, NULL);
	}
	keeper_detach();
	fuse_session_unmount(se); /* nothing to do under a keeper: it unmounts */
out_signals:
	fuse_remove_signal_handlers(se);
	/*
	 * Under a keeper, a stop is the keeper's to say: a SIGTERM it passed on
	 * arriving now (the loop ended as the unmount came first) must not cut
	 * the pushes below short.
	 */
	if (ksock >= 0) {
		signal(SIGTERM, SIG_IGN);
		signal(SIGINT, SIG_IGN);
	}
out_session:
	fuse_session_destroy(se);
out_tree:
	/* Pending pushes complete before the daemon exits. */
	push_stop(tree);
	/* The fetch workers use the tree's registries: stop them first. */
	cache_stop(cache);
	tree_free(tree);
out_cache:
	cache_free(cache);
out_http:
	http_free(http);
out_platform:
	sign_keys_free(trust);
	sign_key_free(sign_key);
	platform_release(&to.platform);
out_ref:
	ref_release(&source);
out_cl:
	free(cl.mountpoint);
out_args:
	if (ksock >= 0)
		close(ksock);
	fuse_opt_free_args(&args);
	free(o.source);
	free(o.mountpoint);
	free(o.cache_dir);
	free(o.platform);
	free(o.ca_file);
	free(o.cache_size);
	free(o.chunk_size);
	free(o.verify);
	free(o.auth_file);
	free(o.cert_file);
	free(o.key_file);
	free(o.artifact_type);
	free(o.index_trust);
	free(o.index_sign_key);
	strlist_release(&o.mirrors);
	return ret;
}
