# A PSGI app for the route-label tests (t/test_routes.py): Perl has no uwsgi::set_logvar, so the
# route comes from uWSGI's own `logvar:` routing action or from --prometheus-route rules.
my $app = sub {
    my $env = shift;
    my $status = $env->{PATH_INFO} =~ m{^/missing/} ? 404 : 200;
    return [$status, ['Content-Type' => 'text/plain'], ["ok from perl\n"]];
};
