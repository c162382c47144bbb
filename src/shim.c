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

/* uwsgi_rlock()/uwsgi_rwunlock() are macros over `uwsgi.lock_ops` (which differs between the
 * default lock engine and ipcsem); `uwsgi` is bound to the pointer so the macros expand as-is. */
void uwsgi_rs_metrics_rlock(struct uwsgi_server *server) {
#define uwsgi (*server)
	uwsgi_rlock(uwsgi.metrics_lock);
#undef uwsgi
}

void uwsgi_rs_metrics_rwunlock(struct uwsgi_server *server) {
#define uwsgi (*server)
	uwsgi_rwunlock(uwsgi.metrics_lock);
#undef uwsgi
}
