;;; ob-chat-ai-messages.el --- The messages a chat-ai block sends  -*- lexical-binding: t; -*-

;; Copyright (C) 2026 The ob-chat-ai authors

;; This file is not part of GNU Emacs.

;; SPDX-License-Identifier: GPL-3.0-or-later

;;; Commentary:

;; A chat-ai block's body may hold several turns of a conversation.  A
;; marker at the start of a line opens a turn:
;;
;;   [system]: You are terse.
;;   [user]: What is Org?
;;   [assistant]: An outliner.
;;   [user]: And Babel?
;;
;; The roles are system, developer, user and assistant; org-ai's
;; [SYS]:, [ME]: and [AI]: work too.  Text before any marker is a user
;; turn.  A backslash before a marker, \[user]:, keeps the line as text.
;;
;; Blocks that share a :session form one conversation in document
;; order: each earlier block contributes the turns it sent, and its
;; #+RESULTS: as the assistant's answer, without chat-ai's own lines.
;; An earlier block whose reply is still on its way, or whose result is
;; an error, a cancelled note or a placeholder, has no answer to give:
;; the session stops there with a line naming it.
;;
;; $name and ${name} in the body are replaced by the value of the
;; block's :var name.

;;; Code:

;;;; Requirements

(require 'ob)
(require 'org-element)
(require 'seq)
(require 'subr-x)
(require 'ob-chat-ai-reply)
(require 'ob-chat-ai-files)

;;;; Turns in a block

(defconst ob-chat-ai-messages--roles
  '(("system" . "system") ("developer" . "developer") ("user" . "user")
    ("assistant" . "assistant") ("sys" . "system") ("me" . "user")
    ("ai" . "assistant"))
  "Turn markers, without brackets and in lower case, and the roles they open.")

(defconst ob-chat-ai-messages--marker
  (concat "^\\(\\\\\\)?\\[\\("
          (regexp-opt (mapcar #'car ob-chat-ai-messages--roles))
          "\\)\\]:[ \t]?")
  "The regexp of a turn marker at the start of a line, perhaps escaped.")

(defun ob-chat-ai-messages-turns (text)
  "Return the (ROLE . CONTENT) pairs of TEXT, in order.
Without any marker, TEXT is one user turn, exactly as written.
Otherwise each turn's content is trimmed, and empty turns are
dropped.  An escaped marker loses its backslash and stays text."
  (let ((case-fold-search t)
        (turns nil)
        (role "user")
        (lines nil)
        (marked nil))
    (dolist (line (split-string text "\n"))
      (cond
       ((not (string-match ob-chat-ai-messages--marker line))
        (push line lines))
       ((match-beginning 1)
        (push (substring line 1) lines))
       (t
        (push (cons role (string-join (nreverse lines) "\n")) turns)
        (setq marked t
              role (cdr (assoc (downcase (match-string 2 line))
                               ob-chat-ai-messages--roles))
              lines (list (substring line (match-end 0)))))))
    (push (cons role (string-join (nreverse lines) "\n")) turns)
    (if (not marked)
        turns
      (seq-remove (lambda (turn) (string-empty-p (cdr turn)))
                  (mapcar (lambda (turn) (cons (car turn) (string-trim (cdr turn))))
                          (nreverse turns))))))

;;;; Variables

(defun ob-chat-ai-messages-substitute (text vars)
  "Return TEXT with $NAME and ${NAME} replaced by the values in VARS.
VARS is an alist of (NAME . VALUE) as `org-babel--get-vars' gives
it; a table becomes Org table text.  Names that VARS lacks stay."
  (if (null vars)
      text
    (replace-regexp-in-string
     "\\$\\(?:{\\([[:alnum:]_-]+\\)}\\|\\([[:alpha:]_][[:alnum:]_-]*\\)\\)"
     (lambda (match)
       (let* ((name (or (match-string 1 match) (match-string 2 match)))
              (entry (assq (intern name) vars)))
         (if entry
             (save-match-data (ob-chat-ai-messages--value-text (cdr entry)))
           match)))
     text t t)))

(defun ob-chat-ai-messages--value-text (value)
  "Return VALUE, a Babel variable's value, as text for a prompt."
  (cond
   ((stringp value) value)
   ((and (consp value) (seq-some #'listp value))
    (orgtbl-to-orgtbl value nil))
   ((consp value) (mapconcat (lambda (item) (format "%s" item)) value "\n"))
   (t (format "%s" value))))

(declare-function orgtbl-to-orgtbl "org-table" (table params))

;;;; Threads across blocks

(defun ob-chat-ai-messages-block-turns (body params)
  "Return what a block with BODY and PARAMS sends, as (ROLE . CONTENT) pairs.
BODY is the block's body as Babel hands it over, its noweb
references expanded; its $variables are replaced by the values of
the :var header args in PARAMS."
  (ob-chat-ai-messages-turns
   (ob-chat-ai-messages-substitute body (org-babel--get-vars params))))

(defvar-local ob-chat-ai-messages--index nil
  "The chat-ai blocks of this buffer, read once for every change of it.
It is (TICK . BLOCKS): TICK is `buffer-chars-modified-tick' when the
buffer was read, BLOCKS a list of (START SESSION BLOCK RESULT) in
document order, where START is where the block's #+begin_src line
starts, SESSION the name of its :session or nil, BLOCK the parsed
block and RESULT the parsed element of its #+RESULTS:, when that
follows the block, else nil.")

(defun ob-chat-ai-messages--blocks ()
  "Return the chat-ai blocks of this buffer, as in `ob-chat-ai-messages--index'.
The buffer is parsed once, not once per block, and again only after
it has changed."
  (let ((tick (buffer-chars-modified-tick)))
    (unless (eql (car ob-chat-ai-messages--index) tick)
      (setq ob-chat-ai-messages--index (cons tick (ob-chat-ai-messages--read-blocks))))
    (cdr ob-chat-ai-messages--index)))

(defun ob-chat-ai-messages--read-blocks ()
  "Return the chat-ai blocks of the whole buffer, read from one parse of it."
  (let ((blocks nil)
        (previous nil))
    (org-with-wide-buffer
     (org-element-map (org-element-parse-buffer 'element) org-element-all-elements
       (lambda (element)
         (when (and previous
                    (= (org-element-property :begin element)
                       (org-element-property :end (nth 2 previous)))
                    (org-element-property :results element))
           (setf (nth 3 previous) element))
         (setq previous nil)
         (when (and (eq (org-element-type element) 'src-block)
                    (equal (org-element-property :language element) "chat-ai"))
           (setq previous (list (org-element-property :post-affiliated element)
                                (ob-chat-ai-messages-session
                                 (nth 2 (ob-chat-ai-messages--block-info element t)))
                                element
                                nil))
           (push previous blocks))
         nil)))
    (nreverse blocks)))

(defun ob-chat-ai-messages--block-info (element &optional no-eval)
  "Return Babel's information about the parsed block ELEMENT, as at point.
NO-EVAL is as for `org-babel-get-src-block-info'."
  (unless (org-element-property :label-fmt element)
    ;; Without one, Org parses the buffer again at point to find the
    ;; block's coderef format, which is then the default one.
    (org-element-put-property element :label-fmt org-coderef-label-format))
  (save-excursion
    (goto-char (org-element-property :post-affiliated element))
    (org-babel-get-src-block-info no-eval element)))

(defun ob-chat-ai-messages-session-blocks (session here)
  "Return where the chat-ai blocks of SESSION before HERE start, in order."
  (mapcar #'car (ob-chat-ai-messages--session-entries session here)))

(defun ob-chat-ai-messages--session-entries (session here)
  "Return the entries of the index for the blocks of SESSION before HERE, in order."
  (seq-filter (lambda (entry)
                (and (< (car entry) here) (equal (nth 1 entry) session)))
              (ob-chat-ai-messages--blocks)))

(defun ob-chat-ai-messages-history (session here busy-p &optional lenient)
  "Return the conversation so far of SESSION, from the blocks before HERE.
Each chat-ai block of SESSION contributes the turns it sent, then
what the model answered in its result; chat-ai's own lines there
are left out, and a block without a result contributes its turns
alone.  Return (TURNS . SYSTEM), SYSTEM being the :system of the
first of those blocks.
A block that is not done has no answer to give: BUSY-P, called with
its position, says its reply is on its way, or its result is no
whole reply (an error, a cancelled request, a placeholder).  Signal
a `user-error' naming it; when LENIENT, let it contribute its turns
alone instead, as a preview or a :cache hash may."
  (let ((turns nil)
        (system nil)
        (first t))
    (org-with-wide-buffer
     (dolist (entry (ob-chat-ai-messages--session-entries session here))
       (goto-char (car entry))
       (let* ((block (car entry))
              (info (ob-chat-ai-messages--block-info (nth 2 entry)))
              (params (nth 2 info))
              (where (format "The block at line %d, earlier in session %s,"
                             (line-number-at-pos block) session))
              (result (ob-chat-ai-messages--parsed-result entry))
              (busy (funcall busy-p block))
              (unfinished (and result (ob-chat-ai-reply-unfinished result))))
         (unless lenient
           (when busy
             (ob-chat-ai--user-error "%s is still answering; run this block \
when its reply is in" where))
           (when unfinished
             (ob-chat-ai--user-error "%s has no whole reply (%s); run it again first"
                         where unfinished)))
         (when first
           (setq system (cdr (assq :system params))
                 first nil))
         (setq turns
               (append turns
                       (ob-chat-ai-messages--with-header-files
                        (ob-chat-ai-messages-block-turns
                         (if (org-babel-noweb-p params :eval)
                             (org-babel-expand-noweb-references info)
                           (nth 1 info))
                         params)
                        params)
                       (and result (not busy) (not unfinished)
                            (ob-chat-ai-messages--tool-turns
                             (ob-chat-ai-reply-tool-records result)))
                       (let ((answer (and result (not busy) (not unfinished)
                                          (ob-chat-ai-reply-answer result))))
                         (and answer (list (cons "assistant" answer)))))))))
    (cons turns system)))

(defun ob-chat-ai-messages--with-header-files (pairs params)
  "Return PAIRS, the roles and contents of an earlier block, with its files.
The files of the :image and :file header args in its PARAMS join its
last user turn, which becomes content parts, as when that block ran:
its links resolve in the Org file's directory, its header args in its
own :dir, and its :detail applies."
  (let* ((dir (cdr (assq :dir params)))
         (default-directory (if dir
                                (file-name-as-directory (expand-file-name dir))
                              default-directory))
         (extra (ob-chat-ai-files-header-parts params))
         (last (car (last (seq-filter (lambda (turn) (equal (car turn) "user"))
                                      pairs)))))
    (if (not (and extra last))
        pairs
      (mapcar (lambda (turn)
                (if (not (eq turn last))
                    turn
                  (let ((content (ob-chat-ai-files-content
                                  (cdr turn)
                                  (ob-chat-ai-files--document-directory)
                                  (ob-chat-ai-files-detail params))))
                    (cons "user"
                          (vconcat (if (stringp content)
                                       `(((type . "text") (text . ,content)))
                                     content)
                                   extra)))))
              pairs))))

(defun ob-chat-ai-messages--tool-turns (records)
  "Return the messages that replay each tool call of RECORDS as it was sent.
Each round is the assistant's message with its calls, then a tool
message per call; such turns are (:message . MESSAGE)."
  (let ((turns nil))
    (dolist (round (seq-group-by #'car records))
      (setq turns
            (append turns
                    (mapcar (lambda (message) (cons :message message))
                            (ob-chat-ai-tools-messages
                             (mapcar #'cadr (cdr round))
                             (mapcar #'caddr (cdr round)))))))
    turns))

(declare-function ob-chat-ai-tools-messages "ob-chat-ai-tools" (requested values))

(defun ob-chat-ai-messages-session (params)
  "Return the name of the :session in PARAMS, or nil when there is none."
  (let ((session (cdr (assq :session params))))
    (and session (not (member session '("" "none"))) (format "%s" session))))

(defun ob-chat-ai-messages--parsed-result (entry)
  "Return the text of the result of the block of index ENTRY, or nil.
The result is read from the parsed element when it follows the block,
as Org's fixed-width lines or a drawer, else found as Babel finds it."
  (let ((element (nth 3 entry)))
    (pcase (and (not (org-element-property :name (nth 2 entry)))
                (org-element-type element))
      ('fixed-width (org-element-property :value element))
      ('drawer (ob-chat-ai-messages--drawer-text element))
      (_ (save-excursion
           (goto-char (car entry))
           (ob-chat-ai-messages--result))))))

(defun ob-chat-ai-messages--drawer-text (element)
  "Return the text in the drawer ELEMENT, its tool records first, without thinking."
  (let ((begin (org-element-property :contents-begin element)))
    (if begin
        (let ((text (buffer-substring-no-properties
                     begin (org-element-property :contents-end element))))
          (concat (ob-chat-ai--tool-blocks text)
                  (org-unescape-code-in-string
                   (ob-chat-ai--without-reasoning
                    (ob-chat-ai--without-tools text)))))
      "")))

(defun ob-chat-ai-messages--result ()
  "Return the text of the result of the block at point, or nil when it has none."
  (let ((where (org-babel-where-is-src-block-result)))
    (when where
      (save-excursion
        (goto-char where)
        (forward-line)
        (let ((element (org-element-at-point)))
          (pcase (org-element-type element)
            ;; Babel reads "42" as a number: take the text as written.
            ('fixed-width (org-element-property :value element))
            ('drawer (ob-chat-ai-messages--drawer-text element))
            (_ (let ((value (org-babel-read-result)))
                 (and (stringp value) value)))))))))

(declare-function org-unescape-code-in-string "org-src" (s))

(provide 'ob-chat-ai-messages)

;;; ob-chat-ai-messages.el ends here
