#!/usr/bin/perl

# End to end: nginx with the module in front of an API, the records delivered to the real
# explorer (build/api-sessions) over HTTP with a bearer token, and the sessions read back
# through the explorer's JSON API and CSV. Then the same through a file the explorer follows.

###############################################################################

use warnings;
use strict;

use Test::More;

use FindBin;
use lib "$FindBin::Bin/lib";

use JSON::PP;
use POSIX qw/ WNOHANG /;
use Time::HiRes qw/ sleep time /;

use Test::Nginx;
use Test::ApiSessions;
use Test::Explorer;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

explorer_binary();

my $t = Test::Nginx->new()->has(qw/http proxy api_sessions/)->plan(17);

my $follow = $t->testdir() . '/follow.ndjson';
explorer_start($t, 8707, '--token', 's3cret', '--follow', $follow);

$t->write_file('secret', 'e2e-secret-0123456789abcdef0123456789');
$t->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

worker_processes 2;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    api_sessions_secret secret;
    api_sessions_node edge-1;
    api_sessions_export url=http://127.0.0.1:%%PORT_8707%%/v1/records
                        "header=Authorization:Bearer s3cret" flush=100ms;

    server {
        listen       127.0.0.1:%%PORT_8080%%;
        server_name  localhost;

        api_sessions on;
        api_sessions_key response_body:/hash/token name=token;
        api_sessions_key $arg_token name=token;
        api_sessions_key request_body:/hash/token name=token;
        api_sessions_param $http_x_user type=user;

        location /login {
            api_sessions_flow auth;
            proxy_pass http://127.0.0.1:%%PORT_8081%%;
        }

        location / {
            proxy_pass http://127.0.0.1:%%PORT_8081%%;
        }
    }

    server {
        listen       127.0.0.1:%%PORT_8081%%;
        default_type application/json;

        location /login { return 200 '{"hash":{"token":"tok-$arg_u"}}'; }
        location /      { return 200 '{"ok":true}'; }
    }
}

EOF

$t->run();

###############################################################################

sub api {
	my ($uri) = @_;
	my $r = http_get($uri, port => 8707) // return undef;
	return undef unless http_status($r) == 200;
	return decode_json(http_content($r));
}

sub wait_requests {
	my ($n, $query) = @_;
	my $deadline = time() + 15;
	my $list;
	while (time() < $deadline) {
		$list = api("/api/sessions?$query");
		my $sum = 0;
		$sum += $_->{requests} for @{$list->{sessions} // []};
		return $list if $sum >= $n;
		sleep(0.1);
	}
	return $list;
}

# The seed's login-token journey, for two users, over HTTP delivery.

for my $u (qw/ alice bob /) {
	http_post_json("/login?u=$u", '{"in":"bbb"}');
	http(<<EOF);
GET /account?token=tok-$u HTTP/1.0
Host: localhost
X-User: $u

EOF
	http_post_json('/orders', qq({"hash":{"token":"tok-$u"}}), 'X-User' => $u);
}

my $list = wait_requests(6, 'limit=50');
my @sessions = @{$list->{sessions}};
is(scalar @sessions, 2, 'two sessions from six requests');
is_deeply([sort map { $_->{requests} } @sessions], [3, 3], 'three requests each');
is_deeply([sort map { $_->{user} // '' } @sessions], ['alice', 'bob'], 'users');
is_deeply([map { $_->{flows} } @sessions], [{ auth => 1 }, { auth => 1 }], 'flows');
is_deeply($sessions[0]{nodes}, ['edge-1'], 'node');

my ($alice) = grep { ($_->{user} // '') eq 'alice' } @sessions;
my $one = api("/api/sessions/$alice->{session_id}");
# requests a millisecond apart may share their ts: compare as sets
is_deeply([sort map { $_->{path} } @{$one->{requests}}], ['/account', '/login', '/orders'],
	'the whole session');
is_deeply([map { $_->{session_key} } @{$one->{requests}}], ['token', 'token', 'token'],
	'grouped by the token each time');
is_deeply($one->{stats}{methods}, { GET => 1, POST => 2 }, 'method statistics');
my ($account) = grep { $_->{path} eq '/account' } @{$one->{requests}};
is($account->{user}, 'alice', 'user from the header');

is(scalar @{api('/api/sessions?user=bob')->{sessions}}, 1, 'user filter');
is(scalar @{api('/api/sessions?flow=auth&method=GET')->{sessions}}, 2,
	'request filter within flow filter');

my $csv = http_get("/api/sessions/$alice->{session_id}.csv", port => 8707);
my @rows = grep { length } split /\r\n/, http_content($csv);
is(scalar @rows, 4, 'csv: header and three rows');
is(scalar(grep { m{,/login,} } @rows), 1, 'csv rows');

ok(!grep({ /\[alert\]/ } $t->read_file('error.log')), 'no alerts while delivering');

$t->stop();

# The same through the module's file, followed by the explorer.

$t->write_file_expand('nginx.conf',
	$t->read_file('nginx.conf') =~ s{api_sessions_export url=[^;]+;}
		{api_sessions_export file=$follow flush=100ms;}r);
$t->run();

http(<<EOF) for 1 .. 3;
GET /account?token=tok-carol HTTP/1.0
Host: localhost
X-User: carol

EOF

$list = wait_requests(3, 'user=carol');
is(scalar @{$list->{sessions}}, 1, 'followed file: one session');
is($list->{sessions}[0]{requests}, 3, 'followed file: three requests');
is(scalar @{api('/api/sessions?limit=50')->{sessions}}, 3, 'all sessions');

###############################################################################
