#!/usr/bin/perl

# Tests for ngx_http_api_sessions_module, blocking from a local document:
# api_sessions_denylist file= (relative to the prefix), read by one worker at
# a time and read again only when the file changes (written in place or
# renamed over); a missing file or a malformed document keeps the last good
# list; reload; and the counters.

###############################################################################

use warnings;
use strict;

use Test::More;

use FindBin;
use lib "$FindBin::Bin/lib";

use Time::HiRes qw/ sleep time /;

use Test::Nginx;
use Test::ApiSessions;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/http proxy api_sessions/)->plan(29);

$t->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

worker_processes 2;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    api_sessions_secret secret;
    api_sessions_export file=%%TESTDIR%%/api_sessions.ndjson flush=100ms;
    api_sessions_denylist zone=deny:1m interval=1s file=denylist.json;

    server {
        listen       127.0.0.1:%%PORT_8081%%;
        location / { return 200 'ok'; }
    }

    server {
        listen       127.0.0.1:%%PORT_8080%%;
        server_name  localhost;

        api_sessions on;
        api_sessions_key $http_x_token name=token;

        location / {
            api_sessions_block on;
            add_header X-Worker $pid always;
            proxy_pass http://127.0.0.1:%%PORT_8081%%;
        }

        location = /status {
            api_sessions off;
            api_sessions_status;
        }
    }
}

EOF

$t->write_file('secret', "0123456789abcdef0123456789abcdef\n");

# No document yet: nginx starts, and nothing is blocked.
$t->run();

###############################################################################

my $path = $t->testdir() . '/denylist.json';

sub entry {
	my ($hash) = @_;
	return qq{{"key_hash":"$hash","expires":null,"reason":"test"}};
}

sub document {
	my ($version, @entries) = @_;
	return '{"version":' . $version . ',"entries":[' . join(',', @entries)
		. ']}';
}

# Requests on new connections until both workers answered, six at least: the
# statuses they got, each once ("403" when all were refused).
my $refused = 0;

sub statuses {
	my ($token, $uri) = @_;
	$uri //= '/';
	my (%codes, %workers);
	for my $n (1 .. 100) {
		my $r = http("GET $uri HTTP/1.0\r\nHost: localhost\r\n"
			. "X-Token: $token\r\n\r\n") // '';
		$codes{http_status($r) // 0}++;
		$workers{$1} = 1 if $r =~ /^X-Worker: (\d+)/mi;
		last if $n >= 6 && keys %workers == 2;
	}
	$refused += $codes{403} // 0;
	return 'one worker only' if keys %workers < 2;
	return join(',', sort keys %codes);
}

sub in_use {
	my ($version) = @_;
	return scalar(() = $t->read_file('error.log')
		=~ /\[info\].*denylist version $version with \d+ entries in use/g);
}

sub errors {
	return status_json('/status')->{denylist_errors};
}

# Waits for $n more errors than $before; the status then.
sub more_errors {
	my ($before, $n) = @_;
	return wait_status('/status',
		sub { $_[0]{denylist_errors} >= $before + $n });
}

ok(wait_log($t, qr/\[error\].*open\(\) "\Q$path\E" failed \(2: No such file or directory\), version 0 stays in use/),
	'no file: logged');
my $s = status_json('/status');
ok($s->{denylist_errors} >= 1, 'no file: counted');
is($s->{denylist_version}, 0, 'no file: no list');
is(statuses('tok-a', '/a'), '200',
	'no file: nothing blocked');
statuses('tok-b', '/b');

# the key hashes, as records carry them
my %hash = map { $_->{path} => $_->{key_hash} } $t->wait_records(12);
my ($blocked_token, $blocked_hash) = ('tok-a', $hash{'/a'});
my ($other_token, $other_hash) = ('tok-b', $hash{'/b'});
ok($blocked_hash && $other_hash && $blocked_hash ne $other_hash, 'key hashes');

$t->write_file('denylist.json', document(1, entry($blocked_hash)));
$s = wait_status('/status', sub { $_[0]{denylist_version} == 1 });
is($s->{denylist_entries}, 1, 'read once written');

is(statuses($blocked_token), '403',
	'blocked by every worker');
is(statuses($other_token), '200', 'another key passes');

# Unchanged, it is not read again, whichever worker looks.
sleep(3.2);
is(in_use(1), 1, 'unchanged: read once in three intervals');

# Written in place: read again.
$t->write_file('denylist.json',
	document(2, entry($blocked_hash), entry($other_hash)));
$s = wait_status('/status', sub { $_[0]{denylist_version} == 2 });
is($s->{denylist_entries}, 2, 'written in place: read again');
is(statuses($other_token), '403', 'the new entry blocks');

# Renamed over, as a publisher does it: read again.
$t->write_file('denylist.json.new', document(3, entry($blocked_hash)));
rename("$path.new", $path) or die "rename: $!\n";
$s = wait_status('/status', sub { $_[0]{denylist_version} == 3 });
is($s->{denylist_entries}, 1, 'renamed over: read again');
is(statuses($other_token), '200', 'unblocked');

# A malformed document: refused, the last good list stays; it is read again
# at each interval until it changes, and each refusal counts.
my $before = errors();
$t->write_file('denylist.json', '{"version":4,"entries":[');
$s = more_errors($before, 2);
ok($s->{denylist_errors} >= $before + 2, 'malformed: counted at each interval');
is($s->{denylist_version}, 3, 'malformed: version kept');
is($s->{denylist_entries}, 1, 'malformed: entries kept');
is(statuses($blocked_token), '403',
	'malformed: still blocked');
ok(wait_log($t, qr/\[error\].*denylist from "\Q$path\E" refused, invalid document: EOF while parsing a list.*, version 3 stays in use/),
	'malformed: logged');

# A bad entry: refused whole.
$before = errors();
$t->write_file('denylist.json',
	document(4, entry($other_hash), entry('XYZ')));
$s = more_errors($before, 1);
is($s->{denylist_version}, 3, 'bad entry: refused whole');
is(statuses($other_token), '200',
	'bad entry: nothing of it in use');

# Good again: in use, and no more errors.
$t->write_file('denylist.json', document(5, entry($blocked_hash)));
$s = wait_status('/status', sub { $_[0]{denylist_version} == 5 });
is($s->{denylist_version}, 5, 'good again: in use');
$before = errors();
sleep(2.2);
is(errors(), $before, 'good again: no more errors');

# The file removed: the list stays.
unlink($path) or die "unlink: $!\n";
$s = more_errors($before, 1);
is($s->{denylist_version}, 5, 'removed: version kept');
is(statuses($blocked_token), '403',
	'removed: still blocked');

# Back, with the same version as before: read, since the file changed.
$t->write_file('denylist.json', document(5, entry($blocked_hash)));
ok(wait_log($t, qr/denylist version 5 with 1 entries in use(?s:.*)denylist version 5 with 1 entries in use/),
	'back: read again');

# reload keeps the list
$t->reload();
$s = status_json('/status');
is($s->{denylist_version}, 5, 'reload: version kept');
is(statuses($blocked_token), '403', 'reload: blocked');

# counters: every refused request of this test
is(status_json('/status')->{blocked}, $refused, 'blocked counter');
like(http_get('/status?format=prometheus'),
	qr/^api_sessions_denylist_entries 1\r?$/m, 'prometheus: entries');

$t->stop();

###############################################################################
