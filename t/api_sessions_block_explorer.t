#!/usr/bin/perl

# End to end: a session recorded through nginx is blocked in the real explorer
# (build/api-sessions), and both workers refuse its token within the denylist's interval plus
# a second; unblocking lets it through again. The block is what the session page's Block
# button sends, as the API takes it.

###############################################################################

use warnings;
use strict;

use Test::More;

use FindBin;
use lib "$FindBin::Bin/lib";

use JSON::PP;
use POSIX ();
use Time::HiRes qw/ sleep time /;

use Test::Nginx;
use Test::ApiSessions;
use Test::Explorer;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

explorer_binary();

my $t = Test::Nginx->new()->has(qw/http proxy api_sessions/)->plan(10);

explorer_start($t, 8707, '--token', 's3cret');

$t->write_file('secret', 'e2e-secret-0123456789abcdef0123456789');
$t->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

worker_processes 2;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    api_sessions_secret secret;
    api_sessions_export url=http://127.0.0.1:%%PORT_8707%%/v1/records
                        "header=Authorization:Bearer s3cret" flush=100ms;
    api_sessions_denylist zone=deny:1m interval=1s
                          url=http://127.0.0.1:%%PORT_8707%%/v1/denylist
                          "header=Authorization:Bearer s3cret";

    server {
        listen       127.0.0.1:%%PORT_8080%%;
        server_name  localhost;

        api_sessions on;
        api_sessions_key $http_x_session_token name=token;

        location / {
            api_sessions_block on;
            add_header X-Worker $pid always;
            add_header X-Blocked $api_session_blocked always;
            proxy_pass http://127.0.0.1:%%PORT_8081%%;
        }

        location = /status {
            api_sessions_status;
        }
    }

    server {
        listen       127.0.0.1:%%PORT_8081%%;
        location / { return 200 'ok'; }
    }
}

EOF

$t->run();

###############################################################################

sub get {
	my ($token) = @_;
	my $r = http(<<EOF) // '';
GET /items HTTP/1.0
Host: localhost
X-Session-Token: $token

EOF
	my ($worker) = $r =~ /^X-Worker: (\d+)/mi;
	return (http_status($r) // 0, $worker // 0);
}

# Polls on new connections until both workers gave $status twice in a row each; returns the
# seconds it took, or undef.
sub until_both {
	my ($token, $status, $within) = @_;
	my $start = time();
	my %streak;
	while (time() - $start < $within) {
		my ($code, $worker) = get($token);
		if ($code == $status) {
			$streak{$worker}++;
		} else {
			%streak = ();
		}
		return time() - $start if 2 == grep { $_ >= 2 } values %streak;
		sleep(0.02);
	}
	return undef;
}

sub api {
	my ($method, $uri, $body) = @_;
	my $length = length($body // '');
	my $r = http(<<EOF . ($body // ''), port => 8707);
$method $uri HTTP/1.0
Host: localhost
Content-Type: application/json
Content-Length: $length

EOF
	return (http_status($r), eval { decode_json(http_content($r)) });
}

my ($code) = get('stolen-token');
is($code, 200, 'not blocked yet');
get('stolen-token') for 1 .. 3;
get('someone-else');

my $session;
my $deadline = time() + 15;
until ($session || time() > $deadline) {
	my (undef, $list) = api('GET', '/api/sessions?limit=10');
	($session) = grep { $_->{requests} == 4 } @{$list->{sessions} // []};
	sleep(0.1);
}
ok($session, 'the session reached the explorer');

my ($status, $block) = api('POST', '/api/denylist',
	encode_json({ session_id => $session->{session_id}, ttl => '1h',
		reason => 'stolen token' }));
is($status, 201, 'blocked in the explorer');

# interval + 1s, stretched only when nginx runs under valgrind (TEST_NGINX_SLOWDOWN).
my $bound = patience(1 + 1);
my $took = until_both('stolen-token', 403, $bound + 5);
ok(defined $took && $took <= $bound, 'both workers refuse the token within interval + 1s')
	or diag('took ' . ($took // 'too long'));
diag(sprintf('blocked on both workers %.2fs after the explorer answered', $took // -1));
is((get('someone-else'))[0], 200, 'another token passes');

my $s = wait_status('/status', sub { ($_[0]{denylist_entries} // 0) == 1 });
is($s->{denylist_version}, $block->{version}, 'status: the version in use');
cmp_ok($s->{blocked}, '>=', 4, 'status: blocked requests counted');

($status) = api('DELETE', "/api/denylist/$block->{entry}{key_hash}");
is($status, 200, 'unblocked in the explorer');
$took = until_both('stolen-token', 200, $bound + 5);
ok(defined $took && $took <= $bound, 'both workers let it through again within interval + 1s')
	or diag('took ' . ($took // 'too long'));

# The refused requests reached the explorer with the block on them.
my $refused = 0;
$deadline = time() + 15;
until ($refused || time() > $deadline) {
	my (undef, $one) = api('GET', "/api/sessions/$session->{session_id}?limit=500");
	$refused = grep { ($_->{blocked} // '') eq 'blocked' } @{$one->{requests} // []};
	sleep(0.1);
}
ok($refused, 'the records of refused requests say "blocked"');

###############################################################################
