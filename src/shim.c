/* C shim, compiled by build.rs with exactly the defines bindgen saw (the target uWSGI's
 * `uwsgi --cflags`). It holds what bindgen cannot express: function-like macros and facts
 * that only the C compiler knows for this configuration. One wrapper per macro, no logic.
 *
 * Nothing here refers to uWSGI's symbols at link time: the server struct comes in as a pointer
 * (resolved with dlsym at load), so test binaries that link this library need no uWSGI. */
#include "uwsgi.h"

/* sizeof(struct uwsgi_server) for the header and defines this plugin was built with; compared
 * at load time with the size of the running binary's `uwsgi` symbol. */
const size_t uwsgi_rs_sizeof_server = sizeof(struct uwsgi_server);

/* uwsgi_rwunlock()/uwsgi_wlock() are macros over `uwsgi.lock_ops` (which differs between the
 * default lock engine and ipcsem); `uwsgi` is bound to the pointer so the macros expand as-is.
 * The write lock is taken only by the fault-injection build (a worker that holds it forever). */
void uwsgi_rs_metrics_wlock(struct uwsgi_server *server) {
#define uwsgi (*server)
	uwsgi_wlock(uwsgi.metrics_lock);
#undef uwsgi
}

void uwsgi_rs_metrics_rwunlock(struct uwsgi_server *server) {
#define uwsgi (*server)
	uwsgi_rwunlock(uwsgi.metrics_lock);
#undef uwsgi
}

/* Takes the metrics read lock only if no writer holds it: 1 taken (release it with
 * uwsgi_rs_metrics_rwunlock), 0 held by a writer, -1 no try-lock with this lock engine (ipcsem,
 * or an rwlock emulated by a mutex). The default engine's rwlock is a process-shared
 * pthread_rwlock_t at lock_ptr (lock.c, uwsgi_rwlock_fast_init); uwsgi_rlock_fast only adds the
 * informational pid, which uwsgi_rwunlock resets anyway. */
int uwsgi_rs_metrics_tryrlock(struct uwsgi_server *server) {
#if defined(UWSGI_LOCK_USE_MUTEX) && !defined(OBSOLETE_LINUX_KERNEL)
	struct uwsgi_lock_item *uli = server->metrics_lock;
	if (server->lock_engine || !uli || !uli->rw || !uli->lock_ptr)
		return -1;
	return pthread_rwlock_tryrdlock((pthread_rwlock_t *) uli->lock_ptr) == 0;
#else
	return -1;
#endif
}
